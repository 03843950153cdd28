"""ViCE: visual concept embeddings by regional SwAV."""
