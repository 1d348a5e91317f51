//! The interactive SQL shell: line editing, history, statements end with `;`.

use anyhow::Result;
use cryptolake_pipeline::query::{OutputFormat, QueryEngine, render};
use rustyline::DefaultEditor;
use rustyline::error::ReadlineError;

const HELP: &str =
    "Tables: crypto_analytics.ohlcv_1h and ohlcv_1m (silver), crypto_gold.ohlcv_1d (gold),
crypto_ops.runs, quality_results and gaps.
End a statement with ;. Commands: \\d lists tables, \\q quits.";

fn history_path() -> Option<std::path::PathBuf> {
    std::env::var_os("HOME").map(|h| std::path::PathBuf::from(h).join(".cryptolake_history"))
}

/// The statement in `buffer` when it is complete: its text up to the last `;` outside quotes
/// and comments, when only whitespace and comments follow that `;`. `SELECT 2; -- x` is the
/// statement `SELECT 2`.
pub fn complete_statement(buffer: &str) -> Option<&str> {
    let b = buffer.as_bytes();
    let (mut i, mut last_semicolon, mut after) = (0, None, false);
    while i < b.len() {
        match b[i] {
            q @ (b'\'' | b'"') => {
                after = true;
                i += 1;
                while i < b.len() && b[i] != q {
                    i += 1;
                }
            }
            b'-' if b.get(i + 1) == Some(&b'-') => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                i += 2;
                while i < b.len() && !(b[i] == b'*' && b.get(i + 1) == Some(&b'/')) {
                    i += 1;
                }
                i += 1;
            }
            b';' => {
                last_semicolon = Some(i);
                after = false;
            }
            c if c.is_ascii_whitespace() => {}
            _ => after = true,
        }
        i += 1;
    }
    match (last_semicolon, after) {
        (Some(end), false) => Some(buffer[..end].trim()),
        _ => None,
    }
}

pub async fn run(engine: &QueryEngine, format: OutputFormat) -> Result<()> {
    let mut editor = DefaultEditor::new()?;
    let history = history_path();
    if let Some(h) = &history {
        let _ = editor.load_history(h);
    }
    println!("cryptolake sql (read-only). {HELP}");
    let mut buffer = String::new();
    loop {
        let prompt = if buffer.is_empty() {
            "cryptolake> "
        } else {
            "        ...> "
        };
        match editor.readline(prompt) {
            Ok(line) => {
                let trimmed = line.trim();
                if buffer.is_empty() {
                    match trimmed {
                        "" => continue,
                        "\\q" | "quit" | "exit" => break,
                        "\\?" | "help" => {
                            println!("{HELP}");
                            continue;
                        }
                        "\\d" => {
                            buffer.push_str("SELECT table_schema, table_name FROM information_schema.tables WHERE table_schema LIKE 'crypto_%' ORDER BY 1, 2;");
                        }
                        _ => {}
                    }
                }
                if trimmed != "\\d" {
                    buffer.push_str(&line);
                    buffer.push('\n');
                }
                let Some(statement) = complete_statement(&buffer).map(str::to_string) else {
                    continue;
                };
                let sql = std::mem::take(&mut buffer);
                let _ = editor.add_history_entry(sql.trim());
                let started = std::time::Instant::now();
                match engine.query(&statement).await {
                    Ok(batches) => {
                        let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
                        match render(&batches, format) {
                            Ok(text) => println!("{text}"),
                            Err(e) => eprintln!("error: {e}"),
                        }
                        println!("({rows} rows in {:.3}s)", started.elapsed().as_secs_f64());
                    }
                    Err(e) => eprintln!("error: {e}"),
                }
            }
            Err(ReadlineError::Interrupted) => buffer.clear(),
            Err(ReadlineError::Eof) => break,
            Err(e) => return Err(e.into()),
        }
    }
    if let Some(h) = &history {
        let _ = editor.save_history(h);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::complete_statement;

    #[test]
    fn a_statement_ends_at_its_last_semicolon_outside_quotes_and_comments() {
        assert_eq!(complete_statement("SELECT 2; -- x"), Some("SELECT 2"));
        assert_eq!(complete_statement("SELECT 2;\n"), Some("SELECT 2"));
        assert_eq!(
            complete_statement("SELECT 2; /* done */ "),
            Some("SELECT 2")
        );
        assert_eq!(complete_statement("SELECT ';'"), None);
        assert_eq!(complete_statement("SELECT 1 -- ;"), None);
        assert_eq!(complete_statement("SELECT 1; SELECT"), None);
        assert_eq!(complete_statement("SELECT 'a;b';"), Some("SELECT 'a;b'"));
        assert_eq!(complete_statement(""), None);
    }
}
