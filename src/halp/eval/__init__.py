"""Downstream evaluation building blocks (paper Sec. 4.2): classifier fitting and kNN."""
