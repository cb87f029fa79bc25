//! metanetd library
