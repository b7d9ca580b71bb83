//! The real servers the channel tests use start, store and serve: an S3 PUT lands as a file, and
//! nginx answers `If-None-Match` with 304 and a Range with 206.

mod channel_support;
mod common;

use channel_support::{Nginx, S3Server};

#[test]
fn s3s_fs_stores_objects_as_files() {
    let s3 = S3Server::start("fleet");
    let client = reqwest::blocking::Client::new();
    let url = format!("{}/fleet/hello.txt", s3.endpoint());
    let put = client.put(&url).body("hello").send().expect("PUT");
    assert!(put.status().is_success(), "{}", put.status());
    assert_eq!(
        std::fs::read_to_string(s3.root.join("fleet/hello.txt")).unwrap(),
        "hello"
    );
    let get = client
        .get(&url)
        .header("Range", "bytes=1-3")
        .send()
        .expect("GET");
    assert_eq!(get.status().as_u16(), 206);
    assert_eq!(get.text().unwrap(), "ell");
}

#[test]
fn nginx_answers_conditional_and_range_requests() {
    let nginx = Nginx::start("location /broken/ { return 500; }");
    std::fs::write(nginx.root.join("channel.json"), b"{\"a\":1}").unwrap();
    let client = reqwest::blocking::Client::new();
    let url = format!("{}/channel.json", nginx.base());
    let first = client.get(&url).send().unwrap();
    assert_eq!(first.status().as_u16(), 200);
    let etag = first.headers()["etag"].to_str().unwrap().to_string();
    let again = client
        .get(&url)
        .header("If-None-Match", &etag)
        .send()
        .unwrap();
    assert_eq!(again.status().as_u16(), 304);
    let part = client.get(&url).header("Range", "bytes=2-").send().unwrap();
    assert_eq!(part.status().as_u16(), 206);
    assert_eq!(part.text().unwrap(), "a\":1}");
    let broken = client
        .get(format!("{}/broken/x", nginx.base()))
        .send()
        .unwrap();
    assert_eq!(broken.status().as_u16(), 500);
    assert_eq!(nginx.access_log_of(4).lines().count(), 4);
}
