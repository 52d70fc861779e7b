//! The registry protocol, both sides: wick serves its store to other wicks and Ollamas
//! ([`serve`]) and pulls from any registry ([`pull`]).

pub(crate) mod pull;
pub(crate) mod serve;
