"""The paper's tables and figures regenerated from MLflow runs, beside the paper's own numbers.

- :mod:`analysis.runs`: runs into pandas (params cast), selection (latest FINISHED per ``run_key``);
- :mod:`analysis.cells`, :mod:`analysis.layout`: runs grouped into cells by config axes, mixed cells refused;
- :mod:`analysis.tables`: Tables 1-6, ``render_experiment``, ``write_experiment`` and ``vice-tables``;
- :mod:`analysis.figures`: Figs 5-7 (data frame, then PNG + PDF + CSV);
- :mod:`analysis.render`: Markdown, LaTeX (booktabs) and CSV writers;
- :mod:`analysis.paper`: ``paper_results.json``, the paper's numbers (Tables 1-8).
"""
