"""Running programs: the supervisor process, workspaces, environments and the executor."""
