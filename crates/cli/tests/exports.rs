//! `cryptolake export` read back by the tools it writes for, the real packages from PyPI:
//! freqtrade (`load_pair_history`, `list-data`, `backtesting`) and nautilus_trader
//! (`ParquetDataCatalog(DIR).bars()` and `.instruments()`). Each compares what the tool reads
//! with `crypto_analytics.ohlcv_1m` (and the longer timeframes with their SQL aggregation), over
//! a lake with a hole in it, and a second export after new data adds only the new candles.

mod support;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};

use cryptolake_model::parse_time;
use cryptolake_sources::sim::{SimClock, SimMarket, SimServer};
use serde_json::Value;
use support::run::{command, csv_rows};

const FREQTRADE: &str = "freqtrade==2026.9";
const NAUTILUS: &str = "nautilus_trader==1.231.0";

fn freqtrade_python() -> PathBuf {
    let py = support::repo_venv_python(".venv-freqtrade");
    support::venv_at(
        ".venv-freqtrade",
        Path::new("python3"),
        &[FREQTRADE],
        &|| support::imports(&py, "freqtrade"),
    )
}

fn nautilus_python() -> PathBuf {
    let py = support::repo_venv_python(".venv-nautilus");
    support::venv_at(
        ".venv-nautilus",
        &support::python312(),
        &[NAUTILUS],
        &|| support::imports(&py, "nautilus_trader"),
    )
}

/// A lake fed from the simulated Binance (spot BTC-USDT and ETH-USDT, perpetual BTC-USDT) over
/// real HTTP, 2024-03-02 to 03-04, with 10:00 to 12:00 of 03-02 never fetched.
struct Lake {
    dir: tempfile::TempDir,
    sim: SimServer,
}

impl Lake {
    async fn new() -> Lake {
        let sim = SimServer::start(
            SimMarket::default_market(7),
            SimClock::Fixed(parse_time("2024-03-06T00:10:00Z").unwrap()),
            0,
        )
        .await
        .unwrap();
        let lake = Lake {
            dir: tempfile::tempdir().unwrap(),
            sim,
        };
        for (since, until) in [
            ("2024-03-02T00:00:00Z", "2024-03-02T10:00:00Z"),
            ("2024-03-02T12:00:00Z", "2024-03-04T00:00:00Z"),
        ] {
            lake.ingest(since, until).await;
        }
        lake
    }

    fn envs(&self) -> Vec<(String, String)> {
        let url = self.sim.base_url();
        vec![
            ("CRYPTOLAKE_BINANCE_BASE_URL".into(), url.clone()),
            ("CRYPTOLAKE_BINANCE_FUTURES_BASE_URL".into(), url),
        ]
    }

    /// Runs `cryptolake --lake LAKE args`, which must succeed: its stdout.
    fn ok(&self, args: &[&str]) -> String {
        let lake = self.dir.path().join("lake").display().to_string();
        let mut all = vec!["--lake", lake.as_str()];
        all.extend(args);
        let out = command(self.dir.path(), &all, &self.envs())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Ingests the range for every market, then builds silver and gold.
    async fn ingest(&self, since: &str, until: &str) {
        for (exchange, symbols) in [
            ("binance", "BTC-USDT,ETH-USDT"),
            ("binance-futures", "BTC-USDT"),
        ] {
            self.ok(&[
                "ingest",
                "--exchange",
                exchange,
                "--symbols",
                symbols,
                "--since",
                since,
                "--until",
                until,
            ]);
        }
        self.ok(&["silver"]);
        self.ok(&["gold"]);
    }

    /// A query's rows as CSV cells, without the header.
    fn sql(&self, query: &str) -> Vec<Vec<String>> {
        csv_rows(&self.ok(&["sql", "--format", "csv", query]))
    }

    /// The candles of a market and timeframe as the lake has them: every minute, and for
    /// longer timeframes the buckets whose every minute is present (Binance serves every
    /// minute, so none is confirmed empty): `[ms, open, high, low, close, volume]`.
    fn expected(&self, exchange: &str, symbol: &str, timeframe: &str) -> Vec<[f64; 6]> {
        let width = match timeframe {
            "1m" => "1 minute",
            "5m" => "5 minutes",
            "1h" => "1 hour",
            "1d" => "1 day",
            other => panic!("{other}"),
        };
        let minutes: i64 = match timeframe {
            "1m" => 1,
            "5m" => 5,
            "1h" => 60,
            _ => 1440,
        };
        let rows = self.sql(&format!(
            "SELECT to_unixtime(b) * 1000, o, h, l, c, v FROM (
               SELECT date_bin(INTERVAL '{width}', open_time, TIMESTAMP '1970-01-01T00:00:00Z') AS b,
                      first_value(open ORDER BY open_time) AS o, max(high) AS h, min(low) AS l,
                      last_value(close ORDER BY open_time) AS c, sum(volume) AS v, count(*) AS n
               FROM crypto_analytics.ohlcv_1m WHERE exchange = '{exchange}' AND symbol = '{symbol}'
               GROUP BY b) WHERE n = {minutes} ORDER BY b"
        ));
        rows.iter()
            .map(|r| {
                let v: Vec<f64> = r.iter().map(|c| c.parse().unwrap()).collect();
                [v[0], v[1], v[2], v[3], v[4], v[5]]
            })
            .collect()
    }
}

fn same(got: &[Vec<f64>], want: &[[f64; 6]], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: candle count");
    for (g, w) in got.iter().zip(want) {
        assert_eq!(g[0], w[0], "{what}: time");
        for i in 1..6 {
            assert!(
                (g[i] - w[i]).abs() <= 1e-9 * w[i].abs().max(1.0),
                "{what} at {}: {g:?} against {w:?}",
                w[0]
            );
        }
    }
}

fn python(py: &Path, script: &str, args: &[&str]) -> String {
    let out = std::process::Command::new(py)
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// What freqtrade's loader reads of a data directory: pair, timeframe, candle type, rows.
const LOAD: &str = r#"
import json, sys
from pathlib import Path
from freqtrade.data.history import load_pair_history
from freqtrade.enums import CandleType
out = {}
for spec in sys.argv[2:]:
    pair, tf, kind = spec.split("|")
    df = load_pair_history(pair=pair, timeframe=tf, datadir=Path(sys.argv[1]), data_format="feather",
                           fill_up_missing=False, candle_type=CandleType(kind))
    out[spec] = [[int(r.date.timestamp() * 1000), r.open, r.high, r.low, r.close, r.volume]
                 for r in df.itertuples()]
print(json.dumps(out))
"#;

fn freqtrade_load(py: &Path, datadir: &Path, specs: &[&str]) -> Value {
    let mut args = vec![datadir.to_str().unwrap()];
    args.extend(specs);
    serde_json::from_str(&python(py, LOAD, &args)).unwrap()
}

fn rows(v: &Value) -> Vec<Vec<f64>> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|r| {
            r.as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap())
                .collect()
        })
        .collect()
}

/// `freqtrade list-data --show-timerange`: (pair, timeframe, type, candles) per line.
fn list_data(py: &Path, datadir: &Path, futures: bool) -> Vec<(String, String, String, u64)> {
    let bin = py.parent().unwrap().join("freqtrade");
    let user = tempfile::tempdir().unwrap();
    let mut cmd = std::process::Command::new(bin);
    cmd.env("COLUMNS", "200").args([
        "list-data",
        "--userdir",
        user.path().to_str().unwrap(),
        "--datadir",
        datadir.to_str().unwrap(),
        "--data-format-ohlcv",
        "feather",
        "--show-timerange",
    ]);
    if futures {
        cmd.args(["--trading-mode", "futures"]);
    }
    let out = cmd.output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text.lines()
        .filter(|l| l.starts_with('│'))
        .map(|l| {
            let c: Vec<&str> = l.split('│').map(str::trim).collect();
            (
                c[1].to_string(),
                c[2].to_string(),
                c[3].to_string(),
                c[6].parse().unwrap(),
            )
        })
        .collect()
}

/// Serves one Binance spot `exchangeInfo` body on loopback for any request: what freqtrade asks
/// an exchange for before a backtest, so that one runs with no network.
fn exchange_info_server() -> String {
    let symbol = |s: &str, base: &str| {
        format!(
            r#"{{"symbol":"{s}","status":"TRADING","baseAsset":"{base}","baseAssetPrecision":8,"quoteAsset":"USDT","quotePrecision":8,"quoteAssetPrecision":8,"orderTypes":["LIMIT","LIMIT_MAKER","MARKET"],"icebergAllowed":true,"ocoAllowed":true,"isSpotTradingAllowed":true,"isMarginTradingAllowed":false,"filters":[{{"filterType":"PRICE_FILTER","minPrice":"0.00000001","maxPrice":"10000000.00000000","tickSize":"0.00000001"}},{{"filterType":"LOT_SIZE","minQty":"0.00000001","maxQty":"900000.00000000","stepSize":"0.00000001"}},{{"filterType":"NOTIONAL","minNotional":"5.00000000","applyMinToMarket":true,"maxNotional":"9000000.00000000","applyMaxToMarket":false,"avgPriceMins":5}}],"permissions":[],"permissionSets":[["SPOT"]]}}"#
        )
    };
    let body = format!(
        r#"{{"timezone":"UTC","serverTime":1709251200000,"rateLimits":[],"exchangeFilters":[],"symbols":[{},{}]}}"#,
        symbol("BTCUSDT", "BTC"),
        symbol("ETHUSDT", "ETH")
    );
    format!("{}/api/v3", serve_always(body))
}

/// Serves a USDⓈ-M futures `exchangeInfo` body (one perpetual, BTCUSDT) for any request.
fn futures_exchange_info_server() -> String {
    let body = r#"{"timezone":"UTC","serverTime":1709251200000,"futuresType":"U_MARGINED","rateLimits":[],"exchangeFilters":[],"assets":[{"asset":"USDT","marginAvailable":true,"autoAssetExchange":"-10000"}],"symbols":[{"symbol":"BTCUSDT","pair":"BTCUSDT","contractType":"PERPETUAL","deliveryDate":4133404800000,"onboardDate":1569398400000,"status":"TRADING","maintMarginPercent":"2.5000","requiredMarginPercent":"5.0000","baseAsset":"BTC","quoteAsset":"USDT","marginAsset":"USDT","pricePrecision":2,"quantityPrecision":3,"baseAssetPrecision":8,"quotePrecision":8,"underlyingType":"COIN","underlyingSubType":["PoW"],"settlePlan":0,"triggerProtect":"0.0500","liquidationFee":"0.012500","marketTakeBound":"0.05","maxMoveOrderLimit":10000,"filters":[{"filterType":"PRICE_FILTER","minPrice":"556.80","maxPrice":"4529764","tickSize":"0.10"},{"filterType":"LOT_SIZE","minQty":"0.001","maxQty":"1000","stepSize":"0.001"},{"filterType":"MARKET_LOT_SIZE","minQty":"0.001","maxQty":"120","stepSize":"0.001"},{"filterType":"MAX_NUM_ORDERS","limit":200},{"filterType":"MAX_NUM_ALGO_ORDERS","limit":10},{"filterType":"MIN_NOTIONAL","notional":"5"},{"filterType":"PERCENT_PRICE","multiplierUp":"1.0500","multiplierDown":"0.9500","multiplierDecimal":"4"}],"orderTypes":["LIMIT","MARKET","STOP","STOP_MARKET","TAKE_PROFIT","TAKE_PROFIT_MARKET","TRAILING_STOP_MARKET"],"timeInForce":["GTC","IOC","FOK","GTX","GTD"]}]}"#;
    format!("{}/fapi/v1", serve_always(body.to_string()))
}

/// Answers every request on a loopback port with `body` (JSON): its base URL.
fn serve_always(body: String) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let mut buf = [0u8; 4096];
            let _ = conn.read(&mut buf);
            let _ = write!(
                conn,
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    format!("http://{addr}")
}

const STRATEGY: &str = r#"
from pandas import DataFrame
from freqtrade.strategy import IStrategy


class CloseAboveOpen(IStrategy):
    INTERFACE_VERSION = 3
    timeframe = "5m"
    minimal_roi = {"0": 100}
    stoploss = -0.99
    startup_candle_count = 0

    def populate_indicators(self, dataframe: DataFrame, metadata: dict) -> DataFrame:
        return dataframe

    def populate_entry_trend(self, dataframe: DataFrame, metadata: dict) -> DataFrame:
        dataframe.loc[dataframe["close"] > dataframe["open"], "enter_long"] = 1
        return dataframe

    def populate_exit_trend(self, dataframe: DataFrame, metadata: dict) -> DataFrame:
        dataframe.loc[dataframe["close"] < dataframe["open"], "exit_long"] = 1
        return dataframe
"#;

/// A freqtrade spot backtest of a trivial strategy on the export alone: its trade count.
fn backtest(py: &Path, datadir: &Path) -> u64 {
    backtest_with(
        py,
        datadir,
        serde_json::json!({
            "trading_mode": "spot",
            "exchange": {
                "name": "binance", "pair_whitelist": ["BTC/USDT", "ETH/USDT"], "pair_blacklist": [],
                "ccxt_config": {"urls": {"api": {"public": exchange_info_server()}},
                                "options": {"fetchMarkets": {"types": ["spot"]}}}
            }
        }),
    )
    .0
}

/// A freqtrade backtest of the trivial strategy with `market` (trading mode and exchange)
/// over the rest of a configuration: its trade count and its report.
fn backtest_with(py: &Path, datadir: &Path, market: Value) -> (u64, String) {
    let work = tempfile::tempdir().unwrap();
    let user = work.path().join("user_data");
    std::fs::create_dir_all(user.join("strategies")).unwrap();
    std::fs::write(user.join("strategies/close_above_open.py"), STRATEGY).unwrap();
    let mut config = serde_json::json!({
        "stake_currency": "USDT", "stake_amount": 100,
        "max_open_trades": 2, "dry_run": true, "dry_run_wallet": 1000, "timeframe": "5m",
        "fee": 0.001,
        "pairlists": [{"method": "StaticPairList"}],
        "entry_pricing": {"price_side": "same"}, "exit_pricing": {"price_side": "same"}
    });
    for (k, v) in market.as_object().unwrap() {
        config[k] = v.clone();
    }
    std::fs::write(work.path().join("config.json"), config.to_string()).unwrap();
    let out = std::process::Command::new(py.parent().unwrap().join("freqtrade"))
        .current_dir(work.path())
        .env("COLUMNS", "200")
        .args([
            "backtesting",
            "-c",
            "config.json",
            "--userdir",
            user.to_str().unwrap(),
            "--datadir",
            datadir.to_str().unwrap(),
            "--data-format-ohlcv",
            "feather",
            "--strategy",
            "CloseAboveOpen",
            "--timerange",
            "20240302-20240305",
            "--export",
            "none",
            "--cache",
            "none",
        ])
        .output()
        .unwrap();
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // freqtrade exits 0 on some configuration errors: the report is the proof.
    assert!(
        out.status.success() && text.contains("BACKTESTING REPORT"),
        "{text}"
    );
    // The report's TOTAL line: `│ TOTAL │ trades │ …`.
    let total = text
        .lines()
        .find(|l| l.starts_with('│') && l.contains(" TOTAL "))
        .unwrap_or_else(|| panic!("no TOTAL line: {text}"));
    let trades = total
        .split('│')
        .map(str::trim)
        .nth(2)
        .unwrap()
        .parse()
        .unwrap();
    (trades, text)
}

#[tokio::test(flavor = "multi_thread")]
async fn freqtrade_reads_the_export_as_it_is_and_a_second_export_adds_only_new_candles() {
    let py = tokio::task::spawn_blocking(freqtrade_python).await.unwrap();
    let lake = Lake::new().await;
    let datadir = lake.dir.path().join("user_data/data/binance");
    let dd = datadir.to_str().unwrap();
    let export = |lake: &Lake| {
        lake.ok(&[
            "export",
            "freqtrade",
            "--datadir",
            dd,
            "--exchange",
            "binance",
            "--timeframes",
            "1m,5m,1h,1d",
            "--format",
            "csv",
        ])
    };
    let summary = csv_rows(&export(&lake));
    let paths: Vec<&str> = summary.iter().map(|r| r[0].as_str()).collect();
    for f in [
        "BTC_USDT-1m.feather",
        "ETH_USDT-5m.feather",
        "BTC_USDT-1d.feather",
    ] {
        assert!(paths.contains(&f), "{paths:?}");
        assert!(datadir.join(f).is_file(), "{f}");
    }
    // A freqtrade directory holds one exchange: binance's spot only, as asked.
    assert!(
        !paths.iter().any(|p| p.starts_with("futures/")),
        "{paths:?}"
    );

    let specs = [
        "BTC/USDT|1m|spot",
        "ETH/USDT|1m|spot",
        "BTC/USDT|5m|spot",
        "BTC/USDT|1h|spot",
        "BTC/USDT|1d|spot",
    ];
    let loaded = freqtrade_load(&py, &datadir, &specs);
    for spec in specs {
        let [pair, tf, _]: [&str; 3] = spec.split('|').collect::<Vec<_>>().try_into().unwrap();
        let symbol = pair.replace('/', "-");
        let want = lake.expected("binance", &symbol, tf);
        same(&rows(&loaded[spec]), &want, spec);
    }
    // The hole stays a hole: nothing between 10:00 and 12:00 of 03-02, and no 03-02 day.
    let minutes = rows(&loaded["BTC/USDT|1m|spot"]);
    let hole = |t: f64| (1709373600000.0..1709380800000.0).contains(&t);
    assert!(!minutes.iter().any(|r| hole(r[0])));
    assert_eq!(minutes.len(), 2 * 1440 - 120);
    let days: Vec<f64> = rows(&loaded["BTC/USDT|1d|spot"])
        .iter()
        .map(|r| r[0])
        .collect();
    assert_eq!(days, [1709424000000.0], "only 03-03 is whole");

    // list-data reads every file back (an unreadable one shows 0 candles).
    let listed = list_data(&py, &datadir, false);
    assert!(
        listed.contains(&(
            "BTC/USDT".into(),
            "1m".into(),
            "spot".into(),
            2 * 1440 - 120
        )),
        "{listed:?}"
    );
    assert!(listed.iter().all(|l| l.3 > 0), "{listed:?}");

    // A backtest runs on the export alone.
    assert!(backtest(&py, &datadir) > 0);

    // A day more in the lake: the second export adds only its candles.
    let before = loaded["BTC/USDT|1m|spot"].clone();
    lake.ingest("2024-03-04T00:00:00Z", "2024-03-05T00:00:00Z")
        .await;
    let second = csv_rows(&export(&lake));
    let added = |path: &str| -> (u64, u64) {
        let r = second.iter().find(|r| r[0] == path).unwrap();
        (r[4].parse().unwrap(), r[5].parse().unwrap())
    };
    assert_eq!(added("BTC_USDT-1m.feather"), (1440, 3 * 1440 - 120));
    assert_eq!(added("BTC_USDT-5m.feather").0, 288);
    assert_eq!(added("BTC_USDT-1d.feather"), (1, 2));
    let again = freqtrade_load(&py, &datadir, &["BTC/USDT|1m|spot"]);
    let again = again["BTC/USDT|1m|spot"].as_array().unwrap();
    assert_eq!(
        &again[..before.as_array().unwrap().len()],
        before.as_array().unwrap().as_slice()
    );
    same(
        &rows(&Value::Array(again.clone())),
        &lake.expected("binance", "BTC-USDT", "1m"),
        "after the second export",
    );
    // A third export with nothing new writes nothing.
    let third = csv_rows(&export(&lake));
    assert!(third.iter().all(|r| r[4] == "0"), "{third:?}");

    // Perpetuals go where freqtrade's futures mode reads them.
    let out = lake.ok(&[
        "export",
        "freqtrade",
        "--datadir",
        dd,
        "--exchange",
        "binance-futures",
        "--timeframes",
        "1m",
        "--format",
        "csv",
    ]);
    assert!(
        out.contains("futures/BTC_USDT_USDT-1m-futures.feather"),
        "{out}"
    );
    let listed = list_data(&py, &datadir, true);
    let want = lake.expected("binance-futures", "BTC-USDT", "1m");
    assert!(
        listed.contains(&(
            "BTC/USDT:USDT".into(),
            "1m".into(),
            "futures".into(),
            want.len() as u64
        )),
        "{listed:?}"
    );
    let loaded = freqtrade_load(&py, &datadir, &["BTC/USDT:USDT|1m|futures"]);
    same(&rows(&loaded["BTC/USDT:USDT|1m|futures"]), &want, "futures");

    // An exchange the lake holds nothing of is named, and nothing is written.
    let lake_arg = lake.dir.path().join("lake").display().to_string();
    let empty = lake.dir.path().join("empty");
    let out = command(
        lake.dir.path(),
        &[
            "--lake",
            &lake_arg,
            "export",
            "freqtrade",
            "--datadir",
            empty.to_str().unwrap(),
            "--exchange",
            "coinbase",
        ],
        &lake.envs(),
    )
    .output()
    .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("--exchange coinbase"),
        "{err}"
    );
    assert!(!empty.exists());
}

/// What freqtrade's loader reads of a perpetual's mark candles and funding rates.
const LOAD_FUTURES_DATA: &str = r#"
import json, sys
from pathlib import Path
from freqtrade.data.history import load_pair_history
from freqtrade.enums import CandleType
d = Path(sys.argv[1])
mark = load_pair_history(pair="BTC/USDT:USDT", timeframe="1h", datadir=d, data_format="feather",
                         fill_up_missing=False, candle_type=CandleType.MARK)
fund = load_pair_history(pair="BTC/USDT:USDT", timeframe="1h", datadir=d, data_format="feather",
                         fill_up_missing=False, candle_type=CandleType.FUNDING_RATE)
print(json.dumps({
    "mark": [[int(r.date.timestamp() * 1000), r.open, r.high, r.low, r.close] for r in mark.itertuples()],
    "funding": [[int(r.date.timestamp() * 1000), r.funding_rate] for r in fund.itertuples()],
}))
"#;

#[tokio::test(flavor = "multi_thread")]
async fn freqtrade_backtests_a_perpetual_on_its_export_with_mark_prices_and_funding() {
    let py = tokio::task::spawn_blocking(freqtrade_python).await.unwrap();
    let lake = Lake::new().await;
    let datadir = lake.dir.path().join("user_data/data/binance");
    let dd = datadir.to_str().unwrap();
    let export = |lake: &Lake| {
        csv_rows(&lake.ok(&[
            "export",
            "freqtrade",
            "--datadir",
            dd,
            "--exchange",
            "binance-futures",
            "--timeframes",
            "5m",
            "--format",
            "csv",
        ]))
    };
    let summary = export(&lake);
    let paths: Vec<&str> = summary.iter().map(|r| r[0].as_str()).collect();
    for f in [
        "futures/BTC_USDT_USDT-5m-futures.feather",
        "futures/BTC_USDT_USDT-1h-mark.feather",
        "futures/BTC_USDT_USDT-1h-funding_rate.feather",
    ] {
        assert!(paths.contains(&f), "{paths:?}");
    }
    let loaded: Value = serde_json::from_str(&python(&py, LOAD_FUTURES_DATA, &[dd])).unwrap();
    // The mark candles: the hours whose every minute the lake holds, as SQL has them.
    let want: Vec<[f64; 6]> = lake
        .sql(
            "SELECT CAST(date_part('epoch', h) * 1000 AS BIGINT), o, hi, lo, c, n FROM ( \
               SELECT date_bin(INTERVAL '1 hour', open_time, TIMESTAMP '1970-01-01T00:00:00Z') AS h, \
               first_value(open ORDER BY open_time) AS o, max(high) AS hi, min(low) AS lo, \
               last_value(close ORDER BY open_time) AS c, count(*) AS n \
               FROM crypto_analytics.mark_ohlcv_1m WHERE exchange = 'binance-futures' GROUP BY h) \
             WHERE n = 60 ORDER BY h",
        )
        .iter()
        .map(|r| {
            let v: Vec<f64> = r.iter().map(|x| x.parse().unwrap()).collect();
            [v[0], v[1], v[2], v[3], v[4], 0.0]
        })
        .collect();
    // Two days less the two hours never fetched.
    assert_eq!(want.len(), 2 * 24 - 2, "mark hours in the lake");
    let got: Vec<Vec<f64>> = rows(&loaded["mark"])
        .into_iter()
        .map(|mut r| {
            r.push(0.0);
            r
        })
        .collect();
    same(&got, &want, "mark");
    // The funding rates: every event, at its slot.
    let want: Vec<Vec<String>> = lake.sql(
        "SELECT CAST(date_part('epoch', funding_slot) * 1000 AS BIGINT), rate \
         FROM crypto_analytics.funding_rates WHERE exchange = 'binance-futures' ORDER BY funding_slot",
    );
    let got = rows(&loaded["funding"]);
    assert_eq!(got.len(), want.len(), "funding events");
    assert!(got.len() >= 6, "{got:?}");
    for (g, w) in got.iter().zip(&want) {
        assert_eq!(g[0], w[0].parse::<f64>().unwrap());
        assert!(
            (g[1] - w[1].parse::<f64>().unwrap()).abs() < 1e-15,
            "{g:?} {w:?}"
        );
    }
    // The gap report names the mark price minutes never fetched, as it does the candles'.
    let gaps = lake.ok(&["gaps"]);
    assert!(
        gaps.contains(
            "mark price binance-futures BTC-USDT: 2024-03-02T10:00Z to 2024-03-02T12:00Z (120 minutes), missing (0 fetches)"
        ),
        "{gaps}"
    );
    assert!(!gaps.contains("funding binance-futures"), "{gaps}");
    // freqtrade's futures backtest runs on the export alone, funding fees and all.
    let (trades, report) = backtest_with(
        &py,
        &datadir,
        serde_json::json!({
            "trading_mode": "futures", "margin_mode": "isolated",
            // Binance's futures tickers carry no price: freqtrade wants the order book.
            "entry_pricing": {"price_side": "same", "use_order_book": true, "order_book_top": 1},
            "exit_pricing": {"price_side": "same", "use_order_book": true, "order_book_top": 1},
            "exchange": {
                "name": "binance", "pair_whitelist": ["BTC/USDT:USDT"], "pair_blacklist": [],
                "ccxt_config": {"urls": {"api": {"fapiPublic": futures_exchange_info_server()}},
                                "options": {"fetchMarkets": {"types": ["linear"]}}}
            }
        }),
    );
    assert!(trades > 0, "{report}");
    // A second export with nothing new adds nothing.
    let again = export(&lake);
    assert!(again.iter().all(|r| r[4] == "0"), "{again:?}");
}

/// What nautilus's catalog reads: the bars of each bar type as `[ts_init, o, h, l, c, v]`, and
/// the instruments' ids and classes.
const NAUTILUS_READ: &str = r#"
import json, sys
from nautilus_trader.persistence.catalog import ParquetDataCatalog
cat = ParquetDataCatalog(sys.argv[1])
out = {"bars": {}, "instruments": sorted([[str(i.id), type(i).__name__] for i in cat.instruments()])}
for bt in sys.argv[2:]:
    out["bars"][bt] = [[b.ts_init, float(b.open), float(b.high), float(b.low), float(b.close), float(b.volume)]
                       for b in cat.bars(bar_types=[bt])]
print(json.dumps(out))
"#;

#[tokio::test(flavor = "multi_thread")]
async fn nautilus_reads_the_catalog_and_a_second_export_adds_only_new_bars() {
    let py = tokio::task::spawn_blocking(nautilus_python).await.unwrap();
    let lake = Lake::new().await;
    let catalog = lake.dir.path().join("catalog");
    let cat = catalog.to_str().unwrap();
    let export = |lake: &Lake| {
        csv_rows(&lake.ok(&[
            "export",
            "nautilus",
            "--catalog",
            cat,
            "--timeframes",
            "1m,1h",
            "--format",
            "csv",
        ]))
    };
    let summary = export(&lake);
    assert!(!summary.is_empty(), "{summary:?}");
    let types = [
        (
            "BTCUSDT.BINANCE-1-MINUTE-LAST-EXTERNAL",
            "binance",
            "BTC-USDT",
            "1m",
            60.0,
        ),
        (
            "ETHUSDT.BINANCE-1-HOUR-LAST-EXTERNAL",
            "binance",
            "ETH-USDT",
            "1h",
            3600.0,
        ),
        (
            "BTCUSDT-PERP.BINANCE-1-MINUTE-LAST-EXTERNAL",
            "binance-futures",
            "BTC-USDT",
            "1m",
            60.0,
        ),
    ];
    let read = |types: &[&str]| -> Value {
        let mut args = vec![cat];
        args.extend(types);
        serde_json::from_str(&python(&py, NAUTILUS_READ, &args)).unwrap()
    };
    let names: Vec<&str> = types.iter().map(|t| t.0).collect();
    let got = read(&names);
    assert_eq!(
        got["instruments"],
        serde_json::json!([
            ["BTCUSDT-PERP.BINANCE", "CryptoPerpetual"],
            ["BTCUSDT.BINANCE", "CurrencyPair"],
            ["ETHUSDT.BINANCE", "CurrencyPair"]
        ])
    );
    // Bars are stamped at their close, in nanoseconds.
    let as_nautilus = |want: Vec<[f64; 6]>, step: f64| -> Vec<[f64; 6]> {
        want.into_iter()
            .map(|mut r| {
                r[0] = (r[0] / 1000.0 + step) * 1e9;
                r
            })
            .collect()
    };
    for (bar_type, exchange, symbol, tf, step) in types {
        same(
            &rows(&got["bars"][bar_type]),
            &as_nautilus(lake.expected(exchange, symbol, tf), step),
            bar_type,
        );
    }
    let before = got["bars"][types[0].0].as_array().unwrap().len();
    assert_eq!(before, 2 * 1440 - 120);

    // A day more: new files with only the new bars, which nautilus reads with the old ones.
    lake.ingest("2024-03-04T00:00:00Z", "2024-03-05T00:00:00Z")
        .await;
    let second = export(&lake);
    let row = second
        .iter()
        .find(|r| r[0] == format!("data/bar/{}", types[0].0))
        .unwrap();
    assert_eq!((row[4].as_str(), row[5].as_str()), ("1440", "4200"));
    let got = read(&names);
    for (bar_type, exchange, symbol, tf, step) in types {
        let bars = rows(&got["bars"][bar_type]);
        let mut times: Vec<f64> = bars.iter().map(|r| r[0]).collect();
        times.dedup();
        assert_eq!(times.len(), bars.len(), "{bar_type}: no bar twice");
        same(
            &bars,
            &as_nautilus(lake.expected(exchange, symbol, tf), step),
            bar_type,
        );
    }
    let third = export(&lake);
    assert!(third.iter().all(|r| r[4] == "0"), "{third:?}");
}
