//! Documentation generated from the clap definition: shell completions
//! (`metanet completion SHELL`) and man pages (the hidden `metanet generate-man DIR`,
//! which `packaging/deb.sh` and `scripts/install.sh` call).
//!
//! Both are built from [`crate::Cli`]'s clap definition, so they can never disagree with
//! the parser. Hidden subcommands (`generate-man`) get no page and no completion.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::CommandFactory;
use clap_complete::Shell;
use clap_mangen::roff::{bold, italic, roman, Roff};
use clap_mangen::Man;

/// The name of the program, as the shell sees it.
const BIN: &str = "metanet";

/// Writes the completion script for `shell` to `out`.
pub(crate) fn completion(shell: Shell, out: &mut dyn Write) -> anyhow::Result<()> {
    let mut cmd = crate::Cli::command();
    // clap_complete panics when its writer fails (a closed pipe: `| grep -q`), so it
    // writes into memory, and the script goes out in one write whose error is ours.
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut cmd, BIN, &mut script);
    match out.write_all(&script).and_then(|()| out.flush()) {
        // The reader has what it wanted and went away: not an error.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other.context("cannot write the completion script"),
    }
}

/// Writes `metanet.1` and one `metanet-SUB[-SUB].1` per (visible) subcommand into
/// `dir`, creating it if needed. Returns the paths written, the top page first.
pub(crate) fn generate_man(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create the man page directory {}", dir.display()))?;
    let mut cmd = crate::Cli::command().disable_help_subcommand(true);
    cmd.build();
    let mut written = Vec::new();
    let top = dir.join(format!("{BIN}.1"));
    write_page(&top, |w| render_top(&cmd, w))?;
    written.push(top);
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        write_subpages(sub, dir, &mut written)?;
    }
    Ok(written)
}

/// Pages for `cmd` and its visible subcommands, depth first.
fn write_subpages(
    cmd: &clap::Command,
    dir: &Path,
    written: &mut Vec<PathBuf>,
) -> anyhow::Result<()> {
    let man = page(cmd);
    let path = dir.join(man.get_filename());
    write_page(&path, |w| {
        man.render(w)?;
        see_also(w)
    })?;
    written.push(path);
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        write_subpages(sub, dir, written)?;
    }
    Ok(())
}

/// The clap_mangen page for `cmd`, in section 1 of the metanet manual.
fn page(cmd: &clap::Command) -> Man {
    Man::new(cmd.clone())
        .section("1")
        .manual("metanet manual")
        .source(concat!("metanet ", env!("CARGO_PKG_VERSION")))
}

/// Creates `path` and fills it with `render`, non-ASCII characters as roff escapes
/// (`\[u2026]`), so that every troff renders the page whatever the locale.
fn write_page(
    path: &Path,
    render: impl FnOnce(&mut dyn Write) -> std::io::Result<()>,
) -> anyhow::Result<()> {
    let write = || -> std::io::Result<()> {
        let mut page = Vec::new();
        render(&mut page)?;
        let page = String::from_utf8(page)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
        std::fs::write(path, ascii_roff(&page))
    };
    write().with_context(|| format!("cannot write the man page {}", path.display()))
}

/// `text` with every non-ASCII character written as the groff escape `\[uXXXX]`.
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

/// `metanet.1`: clap's sections plus exit status and files, then version and see-also.
fn render_top(cmd: &clap::Command, w: &mut dyn Write) -> std::io::Result<()> {
    let man = page(cmd);
    man.render_title(w)?;
    man.render_name_section(w)?;
    man.render_synopsis_section(w)?;
    man.render_description_section(w)?;
    man.render_options_section(w)?;
    man.render_subcommands_section(w)?;
    let mut roff = Roff::new();
    roff.control("SH", ["EXIT STATUS"]);
    for (code, meaning) in EXIT_CODES {
        roff.control("TP", []);
        roff.text([bold(*code)]);
        roff.text([roman(*meaning)]);
    }
    roff.control("SH", ["FILES"]);
    for (path, meaning) in FILES {
        roff.control("TP", []);
        roff.text([italic(*path)]);
        roff.text([roman(*meaning)]);
    }
    roff.to_writer(w)?;
    man.render_version_section(w)?;
    see_also(w)
}

/// The SEE ALSO section every page ends with.
fn see_also(w: &mut dyn Write) -> std::io::Result<()> {
    let mut roff = Roff::new();
    roff.control("SH", ["SEE ALSO"]);
    roff.text([
        bold("metanet"),
        roman("(1), "),
        bold("metanetd"),
        roman("(8); the guides in /usr/share/doc/metanet (cli.md, operations.md)."),
    ]);
    roff.to_writer(w)
}

/// Exit codes as `main` maps them (kept in step with `exit_code` and docs/cli.md).
const EXIT_CODES: &[(&str, &str)] = &[
    ("0", "success (also --help, --version and a closed output pipe)"),
    ("1", "any other failure"),
    (
        "2",
        "usage error or bad input: malformed address, name, secret or endpoint",
    ),
    (
        "3",
        "metanetd is not running: no socket, or nobody listening on it",
    ),
    (
        "4",
        "permission denied on the control socket or the state directory, or a right the caller lacks",
    ),
    ("5", "not found: no such identity, peer or name"),
    (
        "6",
        "refused: the chain registry says the key is revoked or rotated away, or the node denies the peer",
    ),
    (
        "7",
        "unreachable: no record or no handshake answer for the address where it was looked for",
    ),
    (
        "8",
        "timeout: the daemon or a request gave up waiting",
    ),
    ("9", "too many peers: the daemon's peer table is full"),
];

/// Files the command line uses.
const FILES: &[(&str, &str)] = &[
    (
        "/run/metanet/metanetd.sock",
        "metanetd's control socket (--socket); group metanet may use it",
    ),
    (
        "/var/lib/metanet/identities/NAME.key",
        "identity key files (--state-dir), used directly when metanetd is not running",
    ),
];

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::testutil::TempDir;

    fn script(shell: Shell) -> String {
        let mut out = Vec::new();
        completion(shell, &mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    /// A reader that went away (`metanet completion bash | grep -q connect`).
    struct ClosedPipe;

    impl Write for ClosedPipe {
        fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
            Err(std::io::ErrorKind::BrokenPipe.into())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_closed_pipe_is_not_a_panic_or_an_error() {
        completion(Shell::Bash, &mut ClosedPipe).unwrap();
    }

    #[test]
    fn completions_name_the_subcommands() {
        for shell in [
            Shell::Bash,
            Shell::Zsh,
            Shell::Fish,
            Shell::Elvish,
            Shell::PowerShell,
        ] {
            let s = script(shell);
            for word in ["connect", "disconnect", "peers", "register", "endpoint"] {
                assert!(s.contains(word), "{shell}: no {word}");
            }
        }
        assert!(script(Shell::Bash).contains("complete -F"));
        assert!(script(Shell::Zsh).starts_with("#compdef metanet"));
        assert!(script(Shell::Fish).contains("complete -c metanet"));
    }

    #[test]
    fn man_pages_have_a_title_and_sections() {
        let dir = TempDir::new();
        let pages = generate_man(dir.path()).unwrap();
        let names: Vec<String> = pages
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        for want in [
            "metanet.1",
            "metanet-connect.1",
            "metanet-id.1",
            "metanet-id-new.1",
            "metanet-name-register.1",
        ] {
            assert!(names.iter().any(|n| n == want), "no {want} in {names:?}");
        }
        assert!(!names
            .iter()
            .any(|n| n.contains("generate-man") || n.contains("help")));
        for page in &pages {
            let text = std::fs::read_to_string(page).unwrap();
            let stem = page.file_stem().unwrap().to_string_lossy();
            assert!(
                text.lines()
                    .any(|l| l.starts_with(&format!(".TH {stem} 1 "))),
                "{stem}: no .TH line"
            );
            for section in ["NAME", "SYNOPSIS", "SEE ALSO"] {
                assert!(
                    text.lines()
                        .any(|l| l.starts_with(".SH") && l.contains(section)),
                    "{stem}: no {section}"
                );
            }
        }
        groff_renders(&pages);
        let top = std::fs::read_to_string(&pages[0]).unwrap();
        assert!(top.contains(".SH \"EXIT STATUS\"") && top.contains("metanetd.sock"));
        assert!(top.contains("connect"));
    }

    /// groff (when installed) renders every page without a warning.
    fn groff_renders(pages: &[PathBuf]) {
        let Ok(out) = std::process::Command::new("groff")
            .args(["-man", "-Tutf8", "-ww", "-z"])
            .args(pages)
            .env("LC_ALL", "C")
            .output()
        else {
            eprintln!("groff is not installed: the pages are not rendered");
            return;
        };
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success() && stderr.is_empty(), "groff: {stderr}");
    }

    #[test]
    fn non_ascii_becomes_an_escape() {
        assert_eq!(
            ascii_roff("mn1\u{2026} \u{e9}t\u{e9}"),
            "mn1\\[u2026] \\[u00E9]t\\[u00E9]"
        );
    }

    #[test]
    fn man_pages_into_an_unwritable_place_fail_with_the_path() {
        let dir = TempDir::new();
        let file = dir.path().join("file");
        std::fs::write(&file, "").unwrap();
        let err = generate_man(&file.join("man")).unwrap_err();
        assert!(format!("{err:#}").contains("man"), "{err:#}");
    }
}
