//! Integration tests over real HTTP (filled in the next commit).
