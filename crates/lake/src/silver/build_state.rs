//! What silver remembers between builds (`_state/silver/ohlcv_1h.json`), and the manifest
//! entries a build reads since its watermark.

use super::*;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(super) struct SilverState {
    /// Written by builds before the manifest: bronze keys whose content is in silver. A build
    /// with no watermark lists all of bronze once and then keeps only the watermark.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub(super) processed: BTreeSet<String>,
    /// Every manifest entry written before this instant has been dealt with.
    #[serde(default)]
    pub(super) watermark: Option<DateTime<Utc>>,
    /// Entries at or after the watermark already dealt with.
    #[serde(default)]
    pub(super) recent: BTreeSet<String>,
    /// Bronze partitions holding an object whose window runs past the partition's date. No
    /// writer of this project makes one (windows are split at midnight), but a build that
    /// recomputes date D must read such an object from partition D-1, so it lists D-1 only
    /// for the partitions named here. `None` (state from an older build): D-1 is always listed.
    #[serde(default)]
    pub(super) spilling: Option<BTreeSet<String>>,
    /// The version (e-tag) of every silver partition, as this build left it: what gold's plan
    /// compares with, instead of listing the table. `None` (state from an older build): the
    /// next build lists the table once to fill it in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) partitions: Option<BTreeMap<NaiveDate, String>>,
    /// The same for `ohlcv_1m`. `None` (state from a build before the minute table): the next
    /// build lists the table and recomputes every date whose minute partition is missing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) minute_partitions: Option<BTreeMap<NaiveDate, String>>,
}

/// The silver partitions and their versions as the last silver build recorded them; `None`
/// when its state does not record them (no build yet, or one from an older version).
pub async fn partition_versions(lake: &Lake) -> Result<Option<BTreeMap<NaiveDate, String>>> {
    Ok(state::read::<SilverState>(lake, &paths::silver_state())
        .await?
        .and_then(|s| s.partitions))
}

/// The `ohlcv_1m` partitions and their versions as the last silver build recorded them.
pub async fn minute_partition_versions(lake: &Lake) -> Result<Option<BTreeMap<NaiveDate, String>>> {
    Ok(state::read::<SilverState>(lake, &paths::silver_state())
        .await?
        .and_then(|s| s.minute_partitions))
}

/// The silver partitions and their versions, from a listing of the table.
pub async fn list_partition_versions(lake: &Lake) -> Result<BTreeMap<NaiveDate, String>> {
    list_versions(lake, paths::silver_table()).await
}

/// The partitions of a table with one file per date and their versions, from a listing.
pub async fn list_versions(lake: &Lake, table: Path) -> Result<BTreeMap<NaiveDate, String>> {
    Ok(lake
        .list_partition_files(&table, paths::PART_FILE)
        .await?
        .iter()
        .filter_map(|meta| {
            paths::partition_file_date(&table, &meta.location).map(|d| (d, state::version(meta)))
        })
        .collect())
}

/// The manifest entries written at or after `since`: the hour folders from `since`'s hour to
/// the day after `now` (a writer's clock may run ahead), within the first only the names
/// after it. Each day is looked at one level deep, so only hour folders that exist are listed.
pub(crate) async fn manifest_since(
    lake: &Lake,
    since: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<Vec<Path>> {
    let first_hour = hour_start(since);
    let mut out = Vec::new();
    let mut hours = Vec::new();
    let mut day = since.date_naive();
    let last = (now + Duration::days(1)).date_naive();
    while day <= last {
        let (entries, folders) = lake.list_level(&paths::manifest_day(day)).await?;
        // Entries directly in a day folder come from lakes written before hour folders.
        out.extend(
            entries
                .into_iter()
                .map(|e| e.location)
                .filter(|k| paths::parse_manifest_entry(k).is_none_or(|(_, at, _)| at >= since)),
        );
        hours.extend(folders.into_iter().filter_map(|f| {
            let h = paths::manifest_hour_of(&f)?;
            (h >= first_hour).then_some((h, f))
        }));
        day = day.succ_opt().expect("date in range");
    }
    let offset = paths::manifest_offset(since);
    // Within the first hour, only the names from the watermark on.
    let listings = lake
        .list_keys_many(
            hours
                .iter()
                .map(|(h, f)| (f.clone(), (*h == first_hour).then(|| offset.clone())))
                .collect(),
        )
        .await?;
    out.extend(listings.into_iter().flatten());
    Ok(out)
}
