//! Unit tests of the tool-call formats and parser.
