"""Everything a node does, with no I/O: the Node state machine and its parts."""
