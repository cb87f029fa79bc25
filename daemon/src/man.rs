//! `metanetd --generate-man DIR`: the man page metanetd.8, generated from the clap
//! definition (`clap_mangen`) plus the sections clap knows nothing about: environment,
//! signals, files and exit status. `packaging/deb.sh` and `scripts/install.sh` call it.

use std::io::Write;
use std::path::{Path, PathBuf};

use clap_mangen::roff::{bold, italic, roman, Roff};
use clap_mangen::Man;

/// Writes `metanetd.8` for `cmd` into `dir` (created if missing); returns its path.
pub(crate) fn generate(cmd: clap::Command, dir: &Path) -> Result<PathBuf, String> {
    let path = dir.join("metanetd.8");
    let write = || -> std::io::Result<()> {
        std::fs::create_dir_all(dir)?;
        let mut page = Vec::new();
        render(cmd, &mut page)?;
        let page = String::from_utf8(page)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
        std::fs::write(&path, ascii_roff(&page))
    };
    write()
        .map(|()| path.clone())
        .map_err(|e| format!("cannot write the man page {}: {e}", path.display()))
}

/// The whole page: clap's sections (without its unstructured EXTRA from
/// `after_help`), then ours.
fn render(cmd: clap::Command, w: &mut dyn Write) -> std::io::Result<()> {
    let man = Man::new(cmd)
        .section("8")
        .manual("metanet manual")
        .source(concat!("metanet ", env!("CARGO_PKG_VERSION")));
    man.render_title(w)?;
    man.render_name_section(w)?;
    man.render_synopsis_section(w)?;
    man.render_description_section(w)?;
    man.render_options_section(w)?;
    let mut roff = Roff::new();
    roff.control("SH", ["CONFIGURATION"]);
    roff.text([
        roman("The config file is strict TOML with kebab-case keys, every key optional; "),
        roman("flags override it. An unknown key or a bad value stops metanetd with exit "),
        roman("code 2. The packaged "),
        italic("/etc/metanet/metanetd.toml"),
        roman(" lists every key, commented out at its default."),
    ]);
    list(&mut roff, "ENVIRONMENT", ENVIRONMENT);
    list(&mut roff, "SIGNALS", SIGNALS);
    list(&mut roff, "FILES", FILES);
    list(&mut roff, "EXIT STATUS", EXIT_CODES);
    roff.to_writer(w)?;
    man.render_version_section(w)?;
    let mut roff = Roff::new();
    roff.control("SH", ["SEE ALSO"]);
    roff.text([
        bold("metanet"),
        roman("(1), "),
        bold("systemctl"),
        roman("(1), "),
        bold("journalctl"),
        roman("(1); /usr/share/doc/metanet/operations.md, the operator's guide."),
    ]);
    roff.to_writer(w)
}

/// A section of tagged paragraphs: the tag in bold, then its meaning.
fn list(roff: &mut Roff, title: &str, items: &[(&str, &str)]) {
    roff.control("SH", [title]);
    for (tag, meaning) in items {
        roff.control("TP", []);
        roff.text([bold(*tag)]);
        roff.text([roman(*meaning)]);
    }
}

/// `text` with every non-ASCII character written as the groff escape `\[uXXXX]`, so
/// that every troff renders the page whatever the locale.
fn ascii_roff(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_ascii() {
            out.push(c);
        } else {
            out.push_str(&format!("\\[u{:04X}]", u32::from(c)));
        }
    }
    out
}

const ENVIRONMENT: &[(&str, &str)] = &[
    (
        "METANET_LOG",
        "log filter, default info; e.g. debug or metanet_daemon=debug,libp2p=warn",
    ),
    ("NO_COLOR", "no colours in the log"),
    (
        "NOTIFY_SOCKET, WATCHDOG_USEC, JOURNAL_STREAM",
        "set by systemd: readiness and status notification, the watchdog, logging to the journal",
    ),
];

const SIGNALS: &[(&str, &str)] = &[
    (
        "SIGHUP",
        "re-read the config file: changed keys are applied or named in the log as needing a restart",
    ),
    ("SIGTERM, SIGINT", "close the sessions and stop"),
];

const FILES: &[(&str, &str)] = &[
    (
        "/etc/metanet/metanetd.toml",
        "the config file (--config); a missing default file means the defaults",
    ),
    (
        "/var/lib/metanet/",
        "the state directory (--state-dir): identities/NAME.key (mode 0600), default-identity, chain.cache",
    ),
    (
        "/run/metanet/metanetd.sock",
        "the control socket (--socket) that metanet(1) talks to, mode 0660, group metanet",
    ),
];

const EXIT_CODES: &[(&str, &str)] = &[
    (
        "0",
        "stopped by a signal, or --check-config found the file valid",
    ),
    ("1", "any other failure"),
    (
        "2",
        "bad configuration or state (the message names the file and key): restarting does not help",
    ),
    (
        "3",
        "a port or the control socket is in use by another process",
    ),
];

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn page_has_title_options_and_our_sections() {
        let dir = std::env::temp_dir().join(format!("metanetd-man-test-{}", std::process::id()));
        let path = generate(crate::Args::command(), &dir).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        assert!(text.lines().any(|l| l.starts_with(".TH metanetd 8 ")));
        for section in [
            "NAME",
            "SYNOPSIS",
            "OPTIONS",
            "ENVIRONMENT",
            "SIGNALS",
            "FILES",
            "EXIT STATUS",
            "SEE ALSO",
        ] {
            assert!(
                text.lines()
                    .any(|l| l.starts_with(".SH") && l.contains(section)),
                "no {section}"
            );
        }
        for flag in ["check\\-config", "dns\\-listen", "METANET_LOG"] {
            assert!(text.contains(flag), "no {flag}");
        }
        assert!(
            !text.contains("generate\\-man"),
            "the hidden flag is documented"
        );
        assert!(!text.contains("EXTRA"));
        assert!(text.is_ascii());
    }

    #[test]
    fn unwritable_directory_is_named() {
        let err = generate(crate::Args::command(), Path::new("/proc/self/nope")).unwrap_err();
        assert!(err.contains("/proc/self/nope/metanetd.8"), "{err}");
    }
}
