//! Unit tests of the Ollama rendering rules.
