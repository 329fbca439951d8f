//! Secrets kept out of the config file: a `password_file` key names a file whose first line
//! is the password, so a config can be committed and the secrets mounted beside it. The
//! files are read when the config is loaded.

use std::path::Path;

use super::validate::{invalid, user_key, Reason};
use super::{AuthQuery, ConfigError, User};

/// Reads the `password_file` of each user into its `password`. A relative path is taken
/// from `base` (the config file's directory), else from the working directory.
pub(super) fn read_password_files(
    users: &mut [User],
    base: Option<&Path>,
) -> Result<(), ConfigError> {
    for (index, user) in users.iter_mut().enumerate() {
        let Some(file) = user.password_file.as_deref() else {
            continue;
        };
        let key = user_key(index, "password_file");
        user.password = read(&key, file, &user.password, base)?;
    }
    Ok(())
}

/// Reads `[auth] password_file` into its `password`.
pub(super) fn read_auth_password(
    auth: &mut AuthQuery,
    base: Option<&Path>,
) -> Result<(), ConfigError> {
    if let Some(file) = auth.password_file.as_deref() {
        auth.password = read("auth.password_file", file, &auth.password, base)?;
    }
    Ok(())
}

/// The password in `file` (named by `key`), unless `password` is set beside it.
fn read(key: &str, file: &str, password: &str, base: Option<&Path>) -> Result<String, ConfigError> {
    if !password.is_empty() {
        return Err(invalid(key, Reason::PasswordTwice));
    }
    let path = base.map_or_else(|| Path::new(file).to_owned(), |dir| dir.join(file));
    first_line(&path).map_err(|error| invalid(key, Reason::SecretFile { kind: error.kind() }))
}

/// The first line of a file, without its line ending.
fn first_line(path: &Path) -> std::io::Result<String> {
    let text = std::fs::read_to_string(path)?;
    let line = text.lines().next().unwrap_or_default();
    Ok(line.trim_end_matches('\r').to_owned())
}

#[cfg(test)]
mod tests {
    use crate::config::{Config, ConfigError};

    fn dir(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("pgbroker-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn a_password_file_is_read_relative_to_the_config() {
        let dir = dir("secrets");
        std::fs::write(dir.join("app.secret"), "s3cret\nignored\n").unwrap();
        let file = dir.join("config.toml");
        let text = "[[users]]\nname = \"app\"\npassword_file = \"app.secret\"\n";
        std::fs::write(&file, text).unwrap();
        let config = Config::load(&file).unwrap();
        assert_eq!(config.users[0].password, "s3cret");
        assert_eq!(config.users[0].password_file.as_deref(), Some("app.secret"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_missing_file_or_two_passwords_are_named_without_the_secret() {
        let dir = dir("secrets-bad");
        let secret = dir.join("app.secret");
        std::fs::write(&secret, "s3cret\n").unwrap();
        let both = format!(
            "[[users]]\nname = \"app\"\npassword = \"x\"\npassword_file = \"{}\"\n",
            secret.display()
        );
        let error = Config::parse(&both).unwrap_err().to_string();
        assert!(
            error.contains("line 4: `users[0].password_file`"),
            "{error}"
        );
        let missing = "[[users]]\nname = \"app\"\npassword_file = \"/nonexistent/app\"\n";
        let error = Config::parse(missing).unwrap_err();
        assert!(matches!(error, ConfigError::Invalid { .. }), "{error}");
        assert!(
            error
                .to_string()
                .contains("cannot be read (entity not found)"),
            "{error}"
        );
        assert!(!error.to_string().contains("s3cret"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
