"""Developer and fleet tools: flash, deploy and provision boards, the virtual board, simulated
fleets, board-file checks and the benchmark (`mpy-hub-tools --help`)."""
