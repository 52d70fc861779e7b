//! The options Ollama knows and their JSON types: shared by the API's `options`
//! decoder and the Modelfile's `PARAMETER` lines.

/// The JSON type an option must have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OptionKind {
    Int,
    Float,
    Bool,
    StringList,
}

/// Every option wick knows, with its type. `num_thread` caps the CPU threads of the
/// request's steps. Runner options that only tune how Ollama loads a model on GPUs
/// (`num_batch`, `num_gpu`, `main_gpu`, `use_mmap`, `draft_num_predict`) are
/// type-checked like Ollama does and have no other effect: wick reads the whole GGUF,
/// prefills 512 prompt tokens per step (Ollama's `num_batch` default) and has no draft
/// models.
pub const KNOWN_OPTIONS: &[(&str, OptionKind)] = &[
    ("num_keep", OptionKind::Int),
    ("seed", OptionKind::Int),
    ("num_predict", OptionKind::Int),
    ("top_k", OptionKind::Int),
    ("top_p", OptionKind::Float),
    ("min_p", OptionKind::Float),
    ("typical_p", OptionKind::Float),
    ("repeat_last_n", OptionKind::Int),
    ("temperature", OptionKind::Float),
    ("repeat_penalty", OptionKind::Float),
    ("presence_penalty", OptionKind::Float),
    ("frequency_penalty", OptionKind::Float),
    ("stop", OptionKind::StringList),
    ("num_ctx", OptionKind::Int),
    ("num_batch", OptionKind::Int),
    ("num_gpu", OptionKind::Int),
    ("main_gpu", OptionKind::Int),
    ("use_mmap", OptionKind::Bool),
    ("num_thread", OptionKind::Int),
    ("draft_num_predict", OptionKind::Int),
];

/// The type of a known option key.
pub fn option_kind(key: &str) -> Option<OptionKind> {
    KNOWN_OPTIONS
        .iter()
        .find(|(k, _)| *k == key)
        .map(|(_, kind)| *kind)
}
