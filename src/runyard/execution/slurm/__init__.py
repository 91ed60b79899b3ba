"""Running attempts as Slurm batch jobs: the script, the commands, the tracking, the executor."""
