"""``vice-tune``: the search space, the study file, the executor, the driver, the results and the cli."""
