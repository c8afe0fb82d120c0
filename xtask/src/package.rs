//! `cargo xtask package`: each filter module as an OCI image layout following
//! the Wasm OCI image spec (the variant Istio's `WasmPlugin` pulls: config
//! mediaType `application/vnd.wasm.config.v1+json`, one layer
//! `application/vnd.wasm.content.layer.v1+wasm` holding the module), tarred to
//! `target/package/<filter>-<version>.oci.tar` for any OCI tool to push.

use anyhow::{Context, Result, bail};
use sha2::{Digest, Sha256};
use std::path::PathBuf;

pub const MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
pub const INDEX_MEDIA_TYPE: &str = "application/vnd.oci.image.index.v1+json";
pub const CONFIG_MEDIA_TYPE: &str = "application/vnd.wasm.config.v1+json";
pub const LAYER_MEDIA_TYPE: &str = "application/vnd.wasm.content.layer.v1+wasm";

/// One filter to package: its image name and the Wasm root id Envoy runs.
struct Filter {
    name: &'static str,
    root_id: &'static str,
    module: PathBuf,
}

/// Builds the modules and writes one image-layout tarball per filter.
pub fn run() -> Result<()> {
    crate::build_filters(crate::shrink::Shrink::Required)?;
    let modules = gatehouse_integration::tools::filter_modules()?;
    let out_dir = gatehouse_integration::workspace_root().join("target/package");
    std::fs::create_dir_all(&out_dir)?;
    let version = env!("CARGO_PKG_VERSION");
    for filter in [
        Filter {
            name: "gatehouse-postgres",
            root_id: "gatehouse_postgres",
            module: modules.postgres,
        },
        Filter {
            name: "gatehouse-kubernetes",
            root_id: "gatehouse_kubernetes",
            module: modules.kubernetes,
        },
    ] {
        let wasm = std::fs::read(&filter.module)
            .with_context(|| format!("reading {}", filter.module.display()))?;
        let image = ImageLayout::new(&wasm, filter.root_id, version)?;
        let tar_path = out_dir.join(format!("{}-{version}.oci.tar", filter.name));
        std::fs::write(&tar_path, image.to_tar()?)
            .with_context(|| format!("writing {}", tar_path.display()))?;
        println!("{}", tar_path.display());
        println!("  module sha256:   {}", image.module_sha256);
        println!("  manifest digest: sha256:{}", image.manifest_sha256);
    }
    Ok(())
}

/// The files of one OCI image layout, by path inside the layout.
pub struct ImageLayout {
    /// Hex sha256 of the Wasm module (what `WasmPlugin.spec.sha256` pins).
    pub module_sha256: String,
    /// Hex sha256 of the image manifest (the digest to pull by).
    pub manifest_sha256: String,
    /// (path, contents), in the order they are written.
    pub files: Vec<(String, Vec<u8>)>,
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn blob_path(hex: &str) -> String {
    format!("blobs/sha256/{hex}")
}

fn descriptor(media_type: &str, bytes: &[u8]) -> serde_json::Value {
    annotated_descriptor(media_type, bytes, None)
}

/// A descriptor carrying `annotations`, when given.
fn annotated_descriptor(
    media_type: &str,
    bytes: &[u8],
    annotations: Option<serde_json::Value>,
) -> serde_json::Value {
    let mut descriptor = serde_json::json!({
        "mediaType": media_type,
        "digest": format!("sha256:{}", sha256_hex(bytes)),
        "size": bytes.len(),
    });
    if let (Some(fields), Some(annotations)) = (descriptor.as_object_mut(), annotations) {
        fields.insert("annotations".into(), annotations);
    }
    descriptor
}

impl ImageLayout {
    /// Lays out `wasm` as an image tagged `tag` whose config names `root_id`.
    pub fn new(wasm: &[u8], root_id: &str, tag: &str) -> Result<ImageLayout> {
        let config = serde_json::to_vec(&serde_json::json!({
            "type": "envoy_proxy",
            "abiVersions": ["v0.2.1"],
            "rootIds": [root_id],
        }))?;
        let layer = annotated_descriptor(
            LAYER_MEDIA_TYPE,
            wasm,
            Some(serde_json::json!({"org.opencontainers.image.title": "plugin.wasm"})),
        );
        let manifest = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": MANIFEST_MEDIA_TYPE,
            "config": descriptor(CONFIG_MEDIA_TYPE, &config),
            "layers": [layer],
        }))?;
        let manifest_descriptor = annotated_descriptor(
            MANIFEST_MEDIA_TYPE,
            &manifest,
            Some(serde_json::json!({"org.opencontainers.image.ref.name": tag})),
        );
        let index = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": INDEX_MEDIA_TYPE,
            "manifests": [manifest_descriptor],
        }))?;
        let module_sha256 = sha256_hex(wasm);
        let manifest_sha256 = sha256_hex(&manifest);
        let files = vec![
            (
                "oci-layout".to_string(),
                br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec(),
            ),
            ("index.json".to_string(), index),
            (blob_path(&manifest_sha256), manifest),
            (blob_path(&sha256_hex(&config)), config),
            (blob_path(&module_sha256), wasm.to_vec()),
        ];
        Ok(ImageLayout {
            module_sha256,
            manifest_sha256,
            files,
        })
    }

    /// The layout as a POSIX ustar archive (directories first, fixed
    /// timestamps and owners, so the same module gives the same bytes).
    pub fn to_tar(&self) -> Result<Vec<u8>> {
        let mut tar = Vec::new();
        for dir in ["blobs/", "blobs/sha256/"] {
            append_entry(&mut tar, dir, b"", EntryKind::Directory)?;
        }
        for (path, contents) in &self.files {
            append_entry(&mut tar, path, contents, EntryKind::File)?;
        }
        // End of archive: two zero blocks.
        tar.extend_from_slice(&[0; 2 * BLOCK]);
        Ok(tar)
    }
}

const BLOCK: usize = 512;

enum EntryKind {
    File,
    Directory,
}

/// Writes `bytes` at `offset` of a header block.
fn put(header: &mut [u8; BLOCK], offset: usize, bytes: &[u8]) -> Result<()> {
    header
        .get_mut(offset..offset + bytes.len())
        .context("tar header field out of range")?
        .copy_from_slice(bytes);
    Ok(())
}

/// An octal numeric field of `width` bytes: digits, then NUL.
fn octal(value: u64, width: usize) -> Result<Vec<u8>> {
    let digits = format!("{value:0w$o}", w = width - 1);
    if digits.len() != width - 1 {
        bail!("{value} does not fit a {width}-byte tar field");
    }
    let mut field = digits.into_bytes();
    field.push(0);
    Ok(field)
}

fn append_entry(tar: &mut Vec<u8>, path: &str, contents: &[u8], kind: EntryKind) -> Result<()> {
    if path.len() >= 100 {
        bail!("tar path {path} is too long for a ustar name field");
    }
    let (mode, type_flag) = match kind {
        EntryKind::File => (0o644, b'0'),
        EntryKind::Directory => (0o755, b'5'),
    };
    let mut header = [0u8; BLOCK];
    put(&mut header, 0, path.as_bytes())?;
    put(&mut header, 100, &octal(mode, 8)?)?;
    put(&mut header, 108, &octal(0, 8)?)?;
    put(&mut header, 116, &octal(0, 8)?)?;
    put(
        &mut header,
        124,
        &octal(u64::try_from(contents.len())?, 12)?,
    )?;
    put(&mut header, 136, &octal(0, 12)?)?;
    put(&mut header, 148, &[b' '; 8])?;
    put(&mut header, 156, &[type_flag])?;
    put(&mut header, 257, b"ustar\0")?;
    put(&mut header, 263, b"00")?;
    let checksum: u64 = header.iter().map(|&b| u64::from(b)).sum();
    let mut field = format!("{checksum:06o}").into_bytes();
    field.extend_from_slice(&[0, b' ']);
    put(&mut header, 148, &field)?;
    tar.extend_from_slice(&header);
    tar.extend_from_slice(contents);
    let padding = (BLOCK - contents.len() % BLOCK) % BLOCK;
    tar.extend(std::iter::repeat_n(0u8, padding));
    Ok(())
}

#[cfg(test)]
#[allow(clippy::indexing_slicing)]
mod tests {
    use super::*;

    fn file<'a>(image: &'a ImageLayout, path: &str) -> &'a [u8] {
        &image
            .files
            .iter()
            .find(|(p, _)| p == path)
            .unwrap_or_else(|| panic!("{path} missing"))
            .1
    }

    fn json(bytes: &[u8]) -> serde_json::Value {
        serde_json::from_slice(bytes).unwrap()
    }

    #[test]
    fn every_blob_is_named_by_the_sha256_of_its_contents() {
        let image = ImageLayout::new(b"\0asm\x01\0\0\0", "root", "1.0.0").unwrap();
        for (path, contents) in &image.files {
            if let Some(hex) = path.strip_prefix("blobs/sha256/") {
                assert_eq!(hex, sha256_hex(contents), "{path}");
            }
        }
        assert_eq!(image.module_sha256, sha256_hex(b"\0asm\x01\0\0\0"));
    }

    #[test]
    fn index_references_the_manifest_which_references_config_and_module() {
        let wasm = b"\0asm\x01\0\0\0module";
        let image = ImageLayout::new(wasm, "gatehouse_postgres", "1.2.3").unwrap();
        assert_eq!(
            json(file(&image, "oci-layout")),
            serde_json::json!({"imageLayoutVersion": "1.0.0"})
        );
        let index = json(file(&image, "index.json"));
        assert_eq!(index["schemaVersion"], 2);
        assert_eq!(index["mediaType"], INDEX_MEDIA_TYPE);
        let entry = &index["manifests"][0];
        assert_eq!(entry["mediaType"], MANIFEST_MEDIA_TYPE);
        assert_eq!(
            entry["annotations"]["org.opencontainers.image.ref.name"],
            "1.2.3"
        );
        let manifest_hex = entry["digest"]
            .as_str()
            .unwrap()
            .strip_prefix("sha256:")
            .unwrap();
        assert_eq!(manifest_hex, image.manifest_sha256);
        let manifest_bytes = file(&image, &blob_path(manifest_hex));
        assert_eq!(entry["size"], manifest_bytes.len());

        let manifest = json(manifest_bytes);
        assert_eq!(manifest["mediaType"], MANIFEST_MEDIA_TYPE);
        assert_eq!(manifest["config"]["mediaType"], CONFIG_MEDIA_TYPE);
        let layers = manifest["layers"].as_array().unwrap();
        assert_eq!(layers.len(), 1);
        assert_eq!(layers[0]["mediaType"], LAYER_MEDIA_TYPE);
        assert_eq!(layers[0]["digest"], format!("sha256:{}", sha256_hex(wasm)));
        assert_eq!(layers[0]["size"], wasm.len());
        assert_eq!(file(&image, &blob_path(&sha256_hex(wasm))), wasm);

        let config_hex = manifest["config"]["digest"]
            .as_str()
            .unwrap()
            .strip_prefix("sha256:")
            .unwrap();
        let config = json(file(&image, &blob_path(config_hex)));
        assert_eq!(config["rootIds"][0], "gatehouse_postgres");
    }

    #[test]
    fn tarball_is_a_ustar_archive_the_tar_tool_lists() {
        let image = ImageLayout::new(&[7u8; 1000], "root", "1.0.0").unwrap();
        let tar = image.to_tar().unwrap();
        assert_eq!(tar.len() % BLOCK, 0);
        assert_eq!(&tar[257..263], b"ustar\0");
        let dir = std::env::temp_dir().join(format!("gatehouse-package-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("image.tar");
        std::fs::write(&path, &tar).unwrap();
        let out = std::process::Command::new("tar")
            .arg("-tf")
            .arg(&path)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let listed = String::from_utf8(out.stdout).unwrap();
        for (name, _) in &image.files {
            assert!(listed.lines().any(|l| l == name), "{name} not in {listed}");
        }
        let extract = std::process::Command::new("tar")
            .arg("-xf")
            .arg(&path)
            .arg("-C")
            .arg(&dir)
            .status()
            .unwrap();
        assert!(extract.success());
        let module = std::fs::read(dir.join(blob_path(&image.module_sha256))).unwrap();
        assert_eq!(module, vec![7u8; 1000]);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
