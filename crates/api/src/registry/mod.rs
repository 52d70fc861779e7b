//! The registry protocol, both sides: wick serves its store to other wicks and Ollamas
//! ([`serve`]), takes pushes when allowed ([`upload`]) and pulls from any registry
//! ([`pull`]).

mod client;
pub(crate) mod pull;
pub(crate) mod push;
pub(crate) mod serve;
pub(crate) mod upload;
