//! One two-way table between Hugging Face's decoder tensor names and llama.cpp's, read
//! one way by the importers ([`super::decoder`], [`super::gemma3`]) and the other by
//! the test exporter (`tiny_models::write_hf_dir`).

/// Which naming of the block norms a model uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NormNames {
    /// llama, mistral, qwen2, qwen3: `post_attention_layernorm` is the pre-FFN norm.
    Llama,
    /// gemma3: a norm after attention, one before and one after the FFN.
    Gemma3,
}

/// Tensors outside the blocks: (Hugging Face, llama.cpp), without `.weight`.
const GLOBAL: &[(&str, &str)] = &[
    ("model.embed_tokens", "token_embd"),
    ("model.norm", "output_norm"),
    ("lm_head", "output"),
];

/// A block's modules every decoder names alike: (Hugging Face, llama.cpp).
const BLOCK: &[(&str, &str)] = &[
    ("input_layernorm", "attn_norm"),
    ("self_attn.q_proj", "attn_q"),
    ("self_attn.k_proj", "attn_k"),
    ("self_attn.v_proj", "attn_v"),
    ("self_attn.o_proj", "attn_output"),
    ("self_attn.q_norm", "attn_q_norm"),
    ("self_attn.k_norm", "attn_k_norm"),
    ("mlp.gate_proj", "ffn_gate"),
    ("mlp.up_proj", "ffn_up"),
    ("mlp.down_proj", "ffn_down"),
];

const LLAMA_NORMS: &[(&str, &str)] = &[("post_attention_layernorm", "ffn_norm")];

const GEMMA3_NORMS: &[(&str, &str)] = &[
    ("post_attention_layernorm", "post_attention_norm"),
    ("pre_feedforward_layernorm", "ffn_norm"),
    ("post_feedforward_layernorm", "post_ffw_norm"),
];

fn block_pairs(norms: NormNames) -> impl Iterator<Item = &'static (&'static str, &'static str)> {
    let extra = match norms {
        NormNames::Llama => LLAMA_NORMS,
        NormNames::Gemma3 => GEMMA3_NORMS,
    };
    BLOCK.iter().chain(extra)
}

/// `(prefix, layer, module, kind)` of `<prefix><layer>.<module>.<kind>`.
fn split_block<'a>(name: &'a str, prefix: &str) -> Option<(usize, &'a str, &'a str)> {
    let rest = name.strip_prefix(prefix)?;
    let (layer, part) = rest.split_once('.')?;
    let (module, kind) = part.rsplit_once('.')?;
    Some((layer.parse().ok()?, module, kind))
}

/// llama.cpp's name for a Hugging Face decoder tensor.
pub(crate) fn gguf_tensor_name(hf: &str, norms: NormNames) -> Option<String> {
    if let Some((stem, kind)) = hf.rsplit_once('.') {
        if let Some((_, gguf)) = GLOBAL.iter().find(|(h, _)| *h == stem) {
            return Some(format!("{gguf}.{kind}"));
        }
    }
    let (layer, module, kind) = split_block(hf, "model.layers.")?;
    let (_, gguf) = block_pairs(norms).find(|(h, _)| *h == module)?;
    Some(format!("blk.{layer}.{gguf}.{kind}"))
}

/// Hugging Face's name for a llama.cpp decoder tensor.
pub(crate) fn hf_tensor_name(gguf: &str, norms: NormNames) -> Option<String> {
    if let Some((stem, kind)) = gguf.rsplit_once('.') {
        if let Some((hf, _)) = GLOBAL.iter().find(|(_, g)| *g == stem) {
            return Some(format!("{hf}.{kind}"));
        }
    }
    let (layer, module, kind) = split_block(gguf, "blk.")?;
    let (hf, _) = block_pairs(norms).find(|(_, g)| *g == module)?;
    Some(format!("model.layers.{layer}.{hf}.{kind}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tensor_names_follow_llama_cpp() {
        let llama = NormNames::Llama;
        assert_eq!(
            gguf_tensor_name("model.layers.7.self_attn.k_norm.weight", llama).as_deref(),
            Some("blk.7.attn_k_norm.weight")
        );
        assert_eq!(
            gguf_tensor_name("model.layers.0.mlp.down_proj.weight", llama).as_deref(),
            Some("blk.0.ffn_down.weight")
        );
        assert_eq!(
            gguf_tensor_name("model.layers.2.self_attn.q_proj.bias", llama).as_deref(),
            Some("blk.2.attn_q.bias")
        );
        assert_eq!(
            gguf_tensor_name("model.embed_tokens.weight", llama).as_deref(),
            Some("token_embd.weight")
        );
        assert_eq!(gguf_tensor_name("model.vision_tower.x.weight", llama), None);
        assert_eq!(
            gguf_tensor_name("model.layers.3.pre_feedforward_layernorm.weight", llama),
            None
        );
    }

    #[test]
    fn gemma_s_four_norms_have_their_own_names() {
        let gemma = NormNames::Gemma3;
        for (hf, gguf) in [
            (
                "model.layers.3.post_attention_layernorm.weight",
                "blk.3.post_attention_norm.weight",
            ),
            (
                "model.layers.3.pre_feedforward_layernorm.weight",
                "blk.3.ffn_norm.weight",
            ),
            (
                "model.layers.3.post_feedforward_layernorm.weight",
                "blk.3.post_ffw_norm.weight",
            ),
        ] {
            assert_eq!(gguf_tensor_name(hf, gemma).as_deref(), Some(gguf));
            assert_eq!(hf_tensor_name(gguf, gemma).as_deref(), Some(hf));
        }
    }

    #[test]
    fn every_name_maps_back() {
        for norms in [NormNames::Llama, NormNames::Gemma3] {
            for (hf, _) in GLOBAL.iter().chain(block_pairs(norms)) {
                let name = if GLOBAL.iter().any(|(h, _)| h == hf) {
                    format!("{hf}.weight")
                } else {
                    format!("model.layers.11.{hf}.weight")
                };
                let gguf = gguf_tensor_name(&name, norms).expect("a llama.cpp name");
                assert_eq!(hf_tensor_name(&gguf, norms).as_deref(), Some(&name[..]));
            }
        }
    }
}
