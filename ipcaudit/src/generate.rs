//! The man page and shell completions, generated from the clap definitions in `cli.rs`.

use std::path::Path;

use clap::CommandFactory as _;

use crate::cli::Cli;

/// Writes `ipcaudit.1`, `ipcaudit.bash`, `_ipcaudit` (zsh) and `ipcaudit.fish` into `dir`.
pub fn write_all(dir: &Path) -> std::io::Result<Vec<std::path::PathBuf>> {
    std::fs::create_dir_all(dir)?;
    let mut written = Vec::new();
    let man = dir.join("ipcaudit.1");
    let mut page = Vec::new();
    clap_mangen::Man::new(Cli::command()).render(&mut page)?;
    std::fs::write(&man, page)?;
    written.push(man);
    for shell in [
        clap_complete::Shell::Bash,
        clap_complete::Shell::Zsh,
        clap_complete::Shell::Fish,
    ] {
        let path = clap_complete::generate_to(shell, &mut Cli::command(), "ipcaudit", dir)?;
        written.push(path);
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_a_man_page_and_three_completions() {
        let dir = std::env::temp_dir().join(format!("ipcaudit-gen-{}", std::process::id()));
        let files = write_all(&dir).unwrap();
        assert_eq!(files.len(), 4);
        let man = std::fs::read_to_string(dir.join("ipcaudit.1")).unwrap();
        assert!(
            man.contains(".TH ipcaudit"),
            "{}",
            &man[..200.min(man.len())]
        );
        assert!(man.contains("watch"));
        let bash = std::fs::read_to_string(dir.join("ipcaudit.bash")).unwrap();
        assert!(bash.contains("--grace"));
        assert!(
            std::fs::read_to_string(dir.join("ipcaudit.fish"))
                .unwrap()
                .contains("complete -c ipcaudit")
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
