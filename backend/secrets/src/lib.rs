//! Secret values at rest: sealed with AES-256-GCM under a master key whose id travels with
//! every ciphertext. (Being written.)
#![forbid(unsafe_code)]
