//! JSON bytes the way Go's `json.NewEncoder(w).Encode(v)` writes them, so the blobs and
//! manifests we create hash to the same digests Ollama's would: compact, `<`, `>`, `&`,
//! U+2028 and U+2029 escaped, map keys sorted (for `map[string]any` values), and a
//! trailing newline. Decoding takes the first JSON value like `json.Decoder.Decode`.

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

/// Encode `v` as Go's `json.Encoder.Encode` would.
pub(crate) fn encode<T: Serialize + ?Sized>(v: &T) -> Result<Vec<u8>, serde_json::Error> {
    let compact = serde_json::to_string(v)?;
    let mut out = String::with_capacity(compact.len() + 1);
    // These characters only ever occur inside JSON strings, so replacing them anywhere
    // in the compact output is safe.
    for c in compact.chars() {
        match c {
            '<' => out.push_str("\\u003c"),
            '>' => out.push_str("\\u003e"),
            '&' => out.push_str("\\u0026"),
            '\u{2028}' => out.push_str("\\u2028"),
            '\u{2029}' => out.push_str("\\u2029"),
            c => out.push(c),
        }
    }
    out.push('\n');
    Ok(out.into_bytes())
}

/// Recursively sort object keys, as Go does when encoding `map[string]any`.
pub(crate) fn sort_keys(v: Value) -> Value {
    match v {
        Value::Object(map) => {
            let mut entries: Vec<(String, Value)> = map.into_iter().collect();
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            Value::Object(
                entries
                    .into_iter()
                    .map(|(k, v)| (k, sort_keys(v)))
                    .collect(),
            )
        }
        Value::Array(items) => Value::Array(items.into_iter().map(sort_keys).collect()),
        other => other,
    }
}

/// Decode the first JSON value in `bytes`, ignoring anything after it
/// (Go's `json.NewDecoder(r).Decode(&v)`).
pub(crate) fn decode_first<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, serde_json::Error> {
    match serde_json::Deserializer::from_slice(bytes)
        .into_iter::<T>()
        .next()
    {
        Some(result) => result,
        None => Err(<serde_json::Error as serde::de::Error>::custom("EOF")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn encodes_like_go() {
        let v = json!({"stop": ["<|eot_id|>", "a&b"], "temperature": 0.6});
        let bytes = encode(&v).unwrap();
        assert_eq!(
            String::from_utf8(bytes).unwrap(),
            "{\"stop\":[\"\\u003c|eot_id|\\u003e\",\"a\\u0026b\"],\"temperature\":0.6}\n"
        );
    }

    #[test]
    fn sorts_nested_keys() {
        let v = json!({"b": 1, "a": {"d": 1, "c": [{"z": 1, "y": 2}]}});
        let s = serde_json::to_string(&sort_keys(v)).unwrap();
        assert_eq!(s, r#"{"a":{"c":[{"y":2,"z":1}],"d":1},"b":1}"#);
    }

    #[test]
    fn decodes_first_value_only() {
        let v: Value = decode_first(b"{\"a\":1}\n{\"b\":2}").unwrap();
        assert_eq!(v, json!({"a": 1}));
        assert!(decode_first::<Value>(b"   ").is_err());
        assert!(decode_first::<Value>(b"{\"a\":").is_err());
    }
}
