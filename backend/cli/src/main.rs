//! stigmer: the command line over stigmer-client. (Being written.)
#![forbid(unsafe_code)]

fn main() {}
