//! Equality-based label selectors as kubectl's `-l`: `app=sleep`, `app==sleep`, `app!=sleep`, `app`, `!app`,
//! joined by commas.

use serde_json::Value;

use crate::error::StoreError;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Requirement {
    Equals(String, String),
    NotEquals(String, String),
    Exists(String),
    NotExists(String),
}

/// A parsed label selector; the empty selector matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabelSelector {
    requirements: Vec<Requirement>,
}

impl LabelSelector {
    /// Parses `k=v,k2!=v2,k3,!k4`.
    pub fn parse(text: &str) -> Result<Self, StoreError> {
        let mut requirements = Vec::new();
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let requirement = if let Some((key, value)) = part.split_once("!=") {
                Requirement::NotEquals(key.trim().to_string(), value.trim().to_string())
            } else if let Some((key, value)) = part.split_once("==") {
                Requirement::Equals(key.trim().to_string(), value.trim().to_string())
            } else if let Some((key, value)) = part.split_once('=') {
                Requirement::Equals(key.trim().to_string(), value.trim().to_string())
            } else if let Some(key) = part.strip_prefix('!') {
                Requirement::NotExists(key.trim().to_string())
            } else {
                Requirement::Exists(part.to_string())
            };
            let key = match &requirement {
                Requirement::Equals(k, _)
                | Requirement::NotEquals(k, _)
                | Requirement::Exists(k)
                | Requirement::NotExists(k) => k,
            };
            if key.is_empty() || key.contains(char::is_whitespace) {
                return Err(StoreError::BadRequest(format!(
                    "unable to parse requirement {part:?} of label selector {text:?}: \
                     write it as key=value, key!=value, key or !key"
                )));
            }
            requirements.push(requirement);
        }
        Ok(LabelSelector { requirements })
    }

    /// True when the labels (a JSON object, or absent) satisfy every requirement.
    pub fn matches(&self, labels: Option<&Value>) -> bool {
        let label = |key: &str| labels.and_then(|l| l.get(key)).and_then(Value::as_str);
        self.requirements
            .iter()
            .all(|requirement| match requirement {
                Requirement::Equals(k, v) => label(k) == Some(v.as_str()),
                Requirement::NotEquals(k, v) => label(k) != Some(v.as_str()),
                Requirement::Exists(k) => label(k).is_some(),
                Requirement::NotExists(k) => label(k).is_none(),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn selectors_match_as_kubectl() {
        let labels = json!({"app": "sleep", "version": "v1"});
        let cases = [
            ("", true),
            ("app=sleep", true),
            ("app==sleep", true),
            ("app=httpbin", false),
            ("app!=httpbin", true),
            ("app=sleep,version=v1", true),
            ("app=sleep,version=v2", false),
            ("version", true),
            ("tier", false),
            ("!tier", true),
            ("!app", false),
        ];
        for (text, expected) in cases {
            let selector = LabelSelector::parse(text).unwrap();
            assert_eq!(
                selector.matches(Some(&labels)),
                expected,
                "selector {text:?}"
            );
        }
        assert!(!LabelSelector::parse("app=sleep").unwrap().matches(None));
        assert!(LabelSelector::parse("a b=c").is_err());
    }
}
