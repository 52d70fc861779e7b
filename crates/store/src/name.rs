//! Model names: `[host/][namespace/]model[:tag]`, parsed the way Ollama's
//! `types/model/name.go` does (`ParseNameBare` + `Merge(DefaultName())` + `IsValid`).

use std::fmt;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use crate::error::StoreError;

/// Registry host used when a name has none.
pub const DEFAULT_HOST: &str = "registry.ollama.ai";
/// Namespace used when a name has none.
pub const DEFAULT_NAMESPACE: &str = "library";
/// Tag used when a name has none.
pub const DEFAULT_TAG: &str = "latest";

const MAX_HOST_LEN: usize = 350;
const MAX_PART_LEN: usize = 80;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Part {
    Host,
    Namespace,
    Model,
    Tag,
}

/// A fully qualified, validated model name. Every part is non-empty and made only of
/// `[A-Za-z0-9_.:-]` (per part rules), so it is always safe to use as a path below the
/// store: no separators, no `..`, no leading dot.
///
/// Equality and hashing ignore ASCII case, like Ollama's `EqualFold`.
#[derive(Clone, Debug)]
pub struct ModelName {
    host: String,
    namespace: String,
    model: String,
    tag: String,
    /// The string this name was parsed from (used in "not found" messages).
    given: String,
}

impl ModelName {
    /// Parse a user-supplied name, filling in the defaults
    /// (`registry.ollama.ai`, `library`, `latest`).
    pub fn parse(s: &str) -> Result<Self, StoreError> {
        let invalid = || StoreError::InvalidName(s.to_string());
        let bare = parse_bare(s);
        // A part that was announced by a separator but is empty makes the name invalid;
        // only absent parts take a default.
        let pick = |part: Option<&str>, default: &str| part.unwrap_or(default).to_string();
        let name = ModelName {
            host: pick(bare.host, DEFAULT_HOST),
            namespace: pick(bare.namespace, DEFAULT_NAMESPACE),
            model: bare.model.to_string(),
            tag: pick(bare.tag, DEFAULT_TAG),
            given: s.to_string(),
        };
        if name.parts_valid() {
            Ok(name)
        } else {
            Err(invalid())
        }
    }

    /// Build a name from its four parts (for instance from a manifest path).
    pub fn from_parts(
        host: &str,
        namespace: &str,
        model: &str,
        tag: &str,
    ) -> Result<Self, StoreError> {
        let mut name = ModelName {
            host: host.to_string(),
            namespace: namespace.to_string(),
            model: model.to_string(),
            tag: tag.to_string(),
            given: String::new(),
        };
        if !name.parts_valid() {
            return Err(StoreError::InvalidName(format!(
                "{host}/{namespace}/{model}:{tag}"
            )));
        }
        name.given = name.display_shortest();
        Ok(name)
    }

    fn parts_valid(&self) -> bool {
        is_valid_part(Part::Host, &self.host)
            && is_valid_part(Part::Namespace, &self.namespace)
            && is_valid_part(Part::Model, &self.model)
            && is_valid_part(Part::Tag, &self.tag)
    }

    pub fn host(&self) -> &str {
        &self.host
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    pub fn model(&self) -> &str {
        &self.model
    }

    pub fn tag(&self) -> &str {
        &self.tag
    }

    /// The string the name was parsed from, or its shortest display form when it was
    /// built from parts. Ollama puts this form in `model 'x' not found`.
    pub fn as_given(&self) -> &str {
        &self.given
    }

    /// `<namespace>/<model>`, the repository path on a registry.
    pub fn repository(&self) -> String {
        format!("{}/{}", self.namespace, self.model)
    }

    /// Ollama's `DisplayShortest`: drop the host when it is the default registry, and
    /// the namespace too when it is `library`; always keep the tag.
    /// `llama3.2:latest`, `myns/model:tag`, `host.com/ns/model:tag`.
    pub fn display_shortest(&self) -> String {
        let mut out = String::new();
        if !self.host.eq_ignore_ascii_case(DEFAULT_HOST) {
            out.push_str(&self.host);
            out.push('/');
            out.push_str(&self.namespace);
            out.push('/');
        } else if !self.namespace.eq_ignore_ascii_case(DEFAULT_NAMESPACE) {
            out.push_str(&self.namespace);
            out.push('/');
        }
        out.push_str(&self.model);
        out.push(':');
        out.push_str(&self.tag);
        out
    }

    /// `<host>/<namespace>/<model>/<tag>`, relative to `manifests/`.
    pub fn filepath(&self) -> PathBuf {
        [&self.host, &self.namespace, &self.model, &self.tag]
            .iter()
            .collect()
    }

    /// The manifest path of this name, with this name's exact case, under the store
    /// root `root` (the directory holding `blobs/` and `manifests/`).
    pub fn manifest_path(&self, root: &Path) -> PathBuf {
        root.join("manifests").join(self.filepath())
    }

    /// The four parts, host first.
    pub fn parts(&self) -> [&str; 4] {
        [&self.host, &self.namespace, &self.model, &self.tag]
    }

    /// Case-insensitive comparison (Ollama's `EqualFold`).
    pub fn eq_fold(&self, other: &ModelName) -> bool {
        self.parts()
            .iter()
            .zip(other.parts())
            .all(|(a, b)| a.eq_ignore_ascii_case(b))
    }
}

impl PartialEq for ModelName {
    fn eq(&self, other: &Self) -> bool {
        self.eq_fold(other)
    }
}

impl Eq for ModelName {}

impl Hash for ModelName {
    fn hash<H: Hasher>(&self, state: &mut H) {
        for part in self.parts() {
            for b in part.bytes() {
                state.write_u8(b.to_ascii_lowercase());
            }
            state.write_u8(0);
        }
    }
}

/// The fullest form, `host/namespace/model:tag` (Ollama's `Name.String`).
impl fmt::Display for ModelName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{}/{}:{}",
            self.host, self.namespace, self.model, self.tag
        )
    }
}

impl FromStr for ModelName {
    type Err = StoreError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ModelName::parse(s)
    }
}

struct Bare<'a> {
    host: Option<&'a str>,
    namespace: Option<&'a str>,
    model: &'a str,
    tag: Option<&'a str>,
}

/// Ollama's `ParseNameBare`: split on the last `:` (when after the last `/`), then on
/// the last two `/`; whatever is left is the host, minus any `scheme://`.
fn parse_bare(s: &str) -> Bare<'_> {
    let mut rest = s;
    let mut bare = Bare {
        host: None,
        namespace: None,
        model: "",
        tag: None,
    };
    if rest.rfind(':') > rest.rfind('/') {
        if let Some((before, after)) = rest.rsplit_once(':') {
            bare.tag = Some(after);
            rest = before;
        }
    }
    let Some((before, model)) = rest.rsplit_once('/') else {
        bare.model = rest;
        return bare;
    };
    bare.model = model;
    let Some((before, namespace)) = before.rsplit_once('/') else {
        bare.namespace = Some(before);
        return bare;
    };
    bare.namespace = Some(namespace);
    bare.host = Some(match before.split_once("://") {
        Some((_scheme, host)) => host,
        None => before,
    });
    bare
}

fn is_valid_part(kind: Part, s: &str) -> bool {
    let max = if kind == Part::Host {
        MAX_HOST_LEN
    } else {
        MAX_PART_LEN
    };
    if s.is_empty() || s.len() > max {
        return false;
    }
    s.bytes().enumerate().all(|(i, b)| {
        if b.is_ascii_alphanumeric() || b == b'_' {
            return true;
        }
        if i == 0 {
            return false;
        }
        match b {
            b'-' => true,
            b'.' => kind != Part::Namespace,
            b':' => kind == Part::Host,
            _ => false,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(s: &str) -> [String; 4] {
        let n = ModelName::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"));
        n.parts().map(str::to_string)
    }

    #[test]
    fn valid_names() {
        let cases: &[(&str, [&str; 4])] = &[
            (
                "llama3.2",
                ["registry.ollama.ai", "library", "llama3.2", "latest"],
            ),
            (
                "llama3.2:1b",
                ["registry.ollama.ai", "library", "llama3.2", "1b"],
            ),
            (
                "myns/model:tag",
                ["registry.ollama.ai", "myns", "model", "tag"],
            ),
            ("host.com/ns/model:tag", ["host.com", "ns", "model", "tag"]),
            (
                "localhost:5000/ns/model",
                ["localhost:5000", "ns", "model", "latest"],
            ),
            (
                "localhost:5000/ns/model:v1",
                ["localhost:5000", "ns", "model", "v1"],
            ),
            (
                "https://example.com/ns/m:t",
                ["example.com", "ns", "m", "t"],
            ),
            (
                "http://example.com/ns/m",
                ["example.com", "ns", "m", "latest"],
            ),
            ("_a/_b:_c", ["registry.ollama.ai", "_a", "_b", "_c"]),
            (
                "qwen2.5-coder:7b-instruct-q4_K_M",
                [
                    "registry.ollama.ai",
                    "library",
                    "qwen2.5-coder",
                    "7b-instruct-q4_K_M",
                ],
            ),
            ("a..b", ["registry.ollama.ai", "library", "a..b", "latest"]),
            (
                "Llama3:Latest",
                ["registry.ollama.ai", "library", "Llama3", "Latest"],
            ),
        ];
        for (input, want) in cases {
            assert_eq!(parts(input), want.map(str::to_string), "{input}");
        }
    }

    #[test]
    fn invalid_names() {
        let long80 = "a".repeat(81);
        let long_host = format!("{}/ns/m", "h".repeat(351));
        let cases = [
            "",
            ":",
            "model:",
            ":tag",
            "/model",
            "ns/",
            "//model",
            "host//model",
            "a/b/c/d",
            "a/b/c/d/e",
            "../../etc/passwd",
            "..",
            "../model",
            "ns/..",
            "./model",
            ".hidden",
            "model/..:tag",
            "model:..",
            "model:../x",
            "ns\\model",
            "..\\..\\windows",
            "my.ns/model",
            "host/my.ns/model",
            "model:ta:g",
            "mo del",
            "model\0",
            "modèle",
            "-model",
            "model:-tag",
            "model@sha256:abc",
            "https://model",
            "https:/host/ns/model",
            long80.as_str(),
            long_host.as_str(),
        ];
        for input in cases {
            let err = ModelName::parse(input).expect_err(input);
            assert!(
                matches!(&err, StoreError::InvalidName(s) if s == input),
                "{input}"
            );
        }
    }

    #[test]
    fn length_limits() {
        assert!(ModelName::parse(&"a".repeat(80)).is_ok());
        assert!(ModelName::parse(&format!("m:{}", "t".repeat(80))).is_ok());
        assert!(ModelName::parse(&format!("m:{}", "t".repeat(81))).is_err());
        assert!(ModelName::parse(&format!("{}/m", "n".repeat(81))).is_err());
        assert!(ModelName::parse(&format!("{}/ns/m", "h".repeat(350))).is_ok());
    }

    #[test]
    fn display_shortest() {
        let cases = [
            ("llama3.2", "llama3.2:latest"),
            (
                "registry.ollama.ai/library/llama3.2:latest",
                "llama3.2:latest",
            ),
            ("REGISTRY.ollama.ai/Library/llama3.2", "llama3.2:latest"),
            ("myns/model:tag", "myns/model:tag"),
            ("host.com/ns/model:tag", "host.com/ns/model:tag"),
            ("host.com/library/model", "host.com/library/model:latest"),
        ];
        for (input, want) in cases {
            assert_eq!(
                ModelName::parse(input).unwrap().display_shortest(),
                want,
                "{input}"
            );
        }
        let n = ModelName::parse("llama3.2").unwrap();
        assert_eq!(n.to_string(), "registry.ollama.ai/library/llama3.2:latest");
        assert_eq!(n.as_given(), "llama3.2");
        assert_eq!(n.repository(), "library/llama3.2");
    }

    #[test]
    fn case_insensitive_equality_and_hash() {
        use std::collections::HashSet;
        let a = ModelName::parse("Llama3:Latest").unwrap();
        let b = ModelName::parse("registry.ollama.ai/LIBRARY/llama3").unwrap();
        assert_eq!(a, b);
        assert!(a.eq_fold(&b));
        let set: HashSet<_> = [a, b].into_iter().collect();
        assert_eq!(set.len(), 1);
        assert_ne!(
            ModelName::parse("llama3").unwrap(),
            ModelName::parse("llama3:8b").unwrap()
        );
    }

    #[test]
    fn paths() {
        let n = ModelName::parse("localhost:5000/ns/model:v1").unwrap();
        assert_eq!(
            n.manifest_path(Path::new("/root")),
            PathBuf::from("/root/manifests/localhost:5000/ns/model/v1")
        );
        for part in n.filepath().components() {
            assert!(matches!(part, std::path::Component::Normal(_)));
        }
    }

    #[test]
    fn from_parts_validates() {
        let n = ModelName::from_parts("registry.ollama.ai", "library", "m", "t").unwrap();
        assert_eq!(n.as_given(), "m:t");
        assert!(ModelName::from_parts("registry.ollama.ai", "library", "..", "t").is_err());
        assert!(ModelName::from_parts("h", "n", "m", ".DS_Store").is_err());
        assert!(ModelName::from_parts("h", "n.x", "m", "t").is_err());
    }
}
