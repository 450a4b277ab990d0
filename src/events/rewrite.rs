//! What a backfill reads from and keeps of the parts of its range.

use super::*;

/// (file sha256, line, request id) of every event in `parts` of one of `orgs` (all when empty).
pub fn event_keys(
    state_dir: &Path,
    parts: &[String],
    orgs: &[String],
) -> anyhow::Result<Vec<(String, u64, String)>> {
    if parts.is_empty() {
        return Ok(Vec::new());
    }
    let mut lf = scan_parts(state_dir, parts)?;
    if !orgs.is_empty() {
        lf = lf.filter(org_in(orgs));
    }
    let df = lf
        .select([col("file"), col("line"), col("request_id")])
        .collect()?;
    let files = df.column("file")?.str()?.clone();
    let lines = df.column("line")?.i64()?.clone();
    let ids = df.column("request_id")?.str()?.clone();
    let mut out = Vec::with_capacity(df.height());
    for i in 0..df.height() {
        out.push((
            files.get(i).unwrap_or_default().to_string(),
            lines.get(i).unwrap_or(0) as u64,
            ids.get(i).unwrap_or_default().to_string(),
        ));
    }
    Ok(out)
}

/// Writes the events of `parts` (relative to `src`) whose org is not one of `drop_orgs` to
/// `rel` (relative to `dst`, through a temporary file); returns how many rows it holds, and
/// writes nothing when there are none.
pub fn write_kept(
    src: &Path,
    parts: &[String],
    drop_orgs: &[String],
    dst: &Path,
    rel: &str,
) -> anyhow::Result<u64> {
    if parts.is_empty() {
        return Ok(0);
    }
    let mut df = scan_parts(src, parts)?
        .filter(org_in(drop_orgs).not())
        .collect()?;
    if df.height() == 0 {
        return Ok(0);
    }
    let path = dst.join(rel);
    let dir = path.parent().expect("has a parent");
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let tmp = path.with_extension("parquet.tmp");
    let f = File::create(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
    let mut f = BufWriter::with_capacity(WRITE_BUFFER, f);
    ParquetWriter::new(&mut f)
        .with_compression(ParquetCompression::Zstd(None))
        .finish(&mut df)?;
    f.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    std::fs::rename(&tmp, &path).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(df.height() as u64)
}
