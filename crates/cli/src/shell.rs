//! The interactive SQL shell: line editing, history, statements end with `;`.

use anyhow::Result;
use cryptolake_query::{OutputFormat, QueryEngine, render};
use rustyline::DefaultEditor;
use rustyline::error::ReadlineError;

const HELP: &str = "Tables: crypto_analytics.ohlcv_1h (silver), crypto_gold.ohlcv_1d (gold).
End a statement with ;. Commands: \\d lists tables, \\q quits.";

fn history_path() -> Option<std::path::PathBuf> {
    std::env::var_os("HOME").map(|h| std::path::PathBuf::from(h).join(".cryptolake_history"))
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
                if !buffer.trim_end().ends_with(';') {
                    continue;
                }
                let sql = std::mem::take(&mut buffer);
                let _ = editor.add_history_entry(sql.trim());
                let started = std::time::Instant::now();
                match engine.query(sql.trim().trim_end_matches(';')).await {
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
