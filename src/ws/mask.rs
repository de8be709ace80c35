//! Payload masking, RFC 6455 §5.3.
//!
//! Every frame a client sends carries a 32-bit masking key, and each payload byte `i` is XORed with
//! key byte `i mod 4`. Unmasking is the same operation. Because a frame's payload may arrive in
//! several reads, the position inside the key (the *offset*) has to survive from one piece to the
//! next: [`apply_mask`] takes the offset the previous piece ended at and returns the one this piece
//! ends at.
//!
//! The byte-wise definition is [`apply_mask_bytewise`]. [`apply_mask`] computes the same result a
//! machine word at a time: the key is rotated to the current offset, repeated into a `u64`, and XORed
//! over eight bytes per step, which the compiler turns into wide vector instructions for the bulk of
//! the payload.

/// Width of one step of the fast path.
const WORD: usize = 8;

/// XORs `payload` with `key`, starting at position `offset` (0..4) of the key, and returns the key
/// position that follows the last byte. RFC 6455 §5.3: `transformed[i] = original[i] ^ key[i % 4]`.
pub fn apply_mask(payload: &mut [u8], key: [u8; 4], offset: usize) -> usize {
    let offset = offset % 4;
    // Rotating the key by the offset lines the first byte of `payload` up with key[offset]; two
    // copies of the rotated key fill a word. Built from bytes, so it is endian-agnostic.
    let word_key: [u8; WORD] = std::array::from_fn(|i| key[(offset + i) % 4]);
    let word = u64::from_ne_bytes(word_key);

    let mut chunks = payload.chunks_exact_mut(WORD);
    for chunk in &mut chunks {
        let mut bytes = [0u8; WORD];
        bytes.copy_from_slice(chunk);
        let masked = u64::from_ne_bytes(bytes) ^ word;
        chunk.copy_from_slice(&masked.to_ne_bytes());
    }
    let tail = chunks.into_remainder();
    for (i, byte) in tail.iter_mut().enumerate() {
        *byte ^= word_key[i];
    }
    (offset + payload.len()) % 4
}

/// The definition from RFC 6455 §5.3, one byte at a time. Kept as the reference the fast path is
/// tested and benchmarked against.
pub fn apply_mask_bytewise(payload: &mut [u8], key: [u8; 4], offset: usize) -> usize {
    for (i, byte) in payload.iter_mut().enumerate() {
        *byte ^= key[(offset + i) % 4];
    }
    (offset + payload.len()) % 4
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

    #[test]
    fn rfc_5_7_masked_hello_unmasks_to_hello() {
        // The payload of the RFC's "single-frame masked text message" example.
        let mut payload = [0x7f, 0x9f, 0x4d, 0x51, 0x58];
        apply_mask(&mut payload, KEY, 0);
        assert_eq!(&payload, b"Hello");
    }

    #[test]
    fn masking_twice_restores_the_payload() {
        let original: Vec<u8> = (0..=255).collect();
        let mut data = original.clone();
        apply_mask(&mut data, KEY, 0);
        assert_ne!(data, original);
        apply_mask(&mut data, KEY, 0);
        assert_eq!(data, original);
    }

    #[test]
    fn word_at_a_time_equals_bytewise_definition_for_every_length_and_offset() {
        for len in 0..70 {
            for offset in 0..4 {
                let original: Vec<u8> = (0..len).map(|i| (i * 7 + 3) as u8).collect();
                let mut fast = original.clone();
                let mut slow = original.clone();
                let end_fast = apply_mask(&mut fast, KEY, offset);
                let end_slow = apply_mask_bytewise(&mut slow, KEY, offset);
                assert_eq!(fast, slow, "len {len} offset {offset}");
                assert_eq!(end_fast, end_slow);
            }
        }
    }

    #[test]
    fn key_offset_carries_across_partial_payloads() {
        let original: Vec<u8> = (0..100).map(|i| i as u8).collect();
        let mut whole = original.clone();
        apply_mask_bytewise(&mut whole, KEY, 0);
        for split in [1, 2, 3, 5, 9, 17, 64, 99] {
            let mut pieces = original.clone();
            let (head, tail) = pieces.split_at_mut(split);
            let offset = apply_mask(head, KEY, 0);
            apply_mask(tail, KEY, offset);
            assert_eq!(pieces, whole, "split at {split}");
        }
    }
}
