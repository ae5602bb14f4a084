//! Examples for taskflow: the fund-clearing flow lives in `examples/fund-clearing/`.
