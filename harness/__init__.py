"""insertbench's harness: PostgreSQL lifecycle, server launch, load, CPU accounting, verification, results."""
