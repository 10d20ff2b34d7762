//! ETags as upstream computes them: the lowercase hex MD5 of the bytes.
//! MD5 here is an identity check the controller compares, not security.

use md5::{Digest, Md5};

pub fn md5_hex(bytes: &[u8]) -> String {
    Md5::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn matches_md5sum() {
        assert_eq!(super::md5_hex(b""), "d41d8cd98f00b204e9800998ecf8427e");
        assert_eq!(super::md5_hex(b"global\n"), "b6b3f51996c7da2d8adcbb44baa39750");
    }
}
