//! `ironmesh analyze -f FILE...`: a dry check like `istioctl analyze`. It reads the files, runs the same
//! validation as `apply` (Istio's rules, errors and warnings), changes nothing and needs no control
//! plane. It fails (exit 1) when any document is invalid; warnings alone do not fail it.

use crate::error::CliError;
use crate::write::read_source;

/// What one file gave: its printed report and whether it holds an invalid document.
fn analyze_source(file: &str, text: &str) -> (String, bool) {
    let analysis = ironmesh_api::analyze_documents(file, text);
    let mut out = String::new();
    for problem in &analysis.problems {
        out.push_str(&format!("Error: {problem}\n"));
    }
    for warning in &analysis.warnings {
        out.push_str(&format!("Warning: {warning}\n"));
    }
    let (errors, warnings) = (analysis.problems.len(), analysis.warnings.len());
    let plural = |n: usize, what: &str| format!("{n} {what}{}", if n == 1 { "" } else { "s" });
    let verdict = match (errors, warnings) {
        (0, 0) => format!("✔ No validation issues found when analyzing {file}."),
        (0, w) => format!(
            "✔ No validation errors found when analyzing {file} ({}).",
            plural(w, "warning")
        ),
        (e, w) => format!(
            "✘ Validation failed when analyzing {file}: {}, {}; nothing was changed.",
            plural(e, "error"),
            plural(w, "warning")
        ),
    };
    out.push_str(&verdict);
    out.push('\n');
    (out, errors > 0)
}

pub(crate) fn analyze(files: &[String]) -> Result<(), CliError> {
    if files.is_empty() {
        return Err(CliError::Usage(
            "say what to analyze: `ironmesh analyze -f FILE` (repeat -f for more files, `-` for stdin)"
                .into(),
        ));
    }
    let mut invalid = false;
    for file in files {
        let text = read_source(file)?;
        let (report, bad) = analyze_source(file, &text);
        print!("{report}");
        invalid |= bad;
    }
    if invalid {
        Err(CliError::Reported)
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::analyze_source;

    #[test]
    fn a_clean_file_gets_istioctls_verdict() {
        let yaml = "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: r, namespace: foo}\nspec: {host: httpbin, trafficPolicy: {tls: {mode: ISTIO_MUTUAL}}}\n";
        let (out, invalid) = analyze_source("dr.yaml", yaml);
        assert!(!invalid);
        assert_eq!(
            out,
            "✔ No validation issues found when analyzing dr.yaml.\n"
        );
    }

    #[test]
    fn errors_and_warnings_are_listed_with_positions() {
        let yaml = "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: r, namespace: foo}\nspec:\n  host: httpbin\n  subsets:\n  - name: v1\n  - name: v1\n---\napiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: p, namespace: foo}\nspec:\n  selector: {}\n  mtls: {mode: STRICT}\n";
        let (out, invalid) = analyze_source("mixed.yaml", yaml);
        assert!(invalid, "{out}");
        assert!(
            out.contains("Error: mixed.yaml:8:11: spec.subsets[1].name: "),
            "{out}"
        );
        assert!(
            out.contains("Warning: mixed.yaml:14:13: spec.selector: workload selector specified without labels"),
            "{out}"
        );
        assert!(
            out.ends_with("✘ Validation failed when analyzing mixed.yaml: 1 error, 1 warning; nothing was changed.\n"),
            "{out}"
        );
    }
}
