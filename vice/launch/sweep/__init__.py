"""``vice-sweep``, in the order a sweep runs: compose, checks, state, SLURM, cost, plan, launch, cli."""
