//! The prepared model files are committed; their checksums must match SHA256SUMS and the model
//! card, so a corrupted or silently replaced file fails CI rather than a shop window.

mod common;

use common::root;
use vitrine::config::model::sha256_file;

#[test]
fn shipped_files_match_sha256sums_and_the_model_card() {
    let models = root().join("models");
    let sums = std::fs::read_to_string(models.join("SHA256SUMS")).expect("SHA256SUMS");
    let card = std::fs::read_to_string(models.join("MODEL_CARD.md")).expect("MODEL_CARD.md");
    let mut n = 0;
    for line in sums.lines().filter(|l| !l.trim().is_empty()) {
        let (sum, file) = line.split_once("  ").expect("sha256sum format");
        let actual = sha256_file(&models.join(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
        assert_eq!(actual, sum, "{file} does not match SHA256SUMS");
        assert!(
            card.contains(&format!("| {file} | {sum} |")),
            "MODEL_CARD.md lacks the row for {file} with {sum}"
        );
        n += 1;
    }
    assert!(n >= 5, "SHA256SUMS lists only {n} files");
}
