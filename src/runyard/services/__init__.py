"""What runyard does with runs: admission, dispatch, outcomes, recovery, files."""
