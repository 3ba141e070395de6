"""Numbers copied from tests/data/ARCHITECTURES.md (a copy of ../shared/reference), shared by several test files."""

# ARCHITECTURES.md section 2: k_size -> (d, a, a padding, m, m padding)
LSKA_TABLE = {
    7: (2, 3, 1, 3, 2),
    11: (2, 3, 1, 5, 4),
    23: (3, 5, 2, 7, 9),
    35: (3, 5, 2, 11, 15),
    41: (3, 5, 2, 13, 18),
    53: (3, 5, 2, 17, 24),
}
