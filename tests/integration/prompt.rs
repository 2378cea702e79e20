//! Prompt templates and batch assembly.

use ega_core::model::ImageSlot;
use ega_core::prompt::{encode_prompt, AssembledBatch, SpecialTokens, TokenizedPrompt};
use ega_tests::WordTokenizer;

#[test]
fn templates_put_bos_image_text_eos_in_order() {
    let special = SpecialTokens::default();
    let mut tokenizer = WordTokenizer::default();
    let ids = encode_prompt("Describe <image> then {text} please", "red square", true, &special, &mut |s| {
        Ok(tokenizer.encode(s))
    })
    .unwrap();
    let words = |s: &str, t: &mut WordTokenizer| t.encode(s);
    let mut expected = vec![special.bos];
    expected.extend(words("describe", &mut tokenizer));
    expected.push(special.image);
    expected.extend(words("then red square please", &mut tokenizer));
    expected.push(special.eos);
    assert_eq!(ids, expected);
    let err = encode_prompt("no slot", "x", true, &special, &mut |s| Ok(tokenizer.encode(s))).unwrap_err().to_string();
    assert!(err.contains("no <image> slot"), "{err}");
    let err =
        encode_prompt("<image> x", "", false, &special, &mut |s| Ok(tokenizer.encode(s))).unwrap_err().to_string();
    assert!(err.contains("no image was given"), "{err}");
}

#[test]
fn assembly_splices_image_tokens_and_pads_on_the_right() {
    let special = SpecialTokens::default();
    let prompts = [
        TokenizedPrompt { ids: vec![1, 3, 9, 2], image: Some(1) },
        TokenizedPrompt { ids: vec![1, 8, 2], image: None },
    ];
    let batch = AssembledBatch::new(&prompts, &slot(2), 2, &special, 64).unwrap();
    assert_eq!(batch.lengths, vec![5, 3]);
    assert_eq!(batch.seq_len, 5);
    assert_eq!(batch.text_len, 4); // longest text (3) + one guaranteed pad slot
    assert_eq!(batch.text_ids, vec![1, 9, 2, 0, 1, 8, 2, 0]);
    // Row 0: bos, image 1's two tokens (rows 8 + 1·2 + {0, 1} of the pool), 9, eos.
    // Row 1: bos, 8, eos, then its pad slot twice.
    assert_eq!(batch.source, vec![0, 10, 11, 1, 2, 4, 5, 6, 7, 7]);
    let bias = batch.attention_bias(-1.0);
    // Row 1, query position 4 (padding) sees keys 0..3 only.
    let row1_q4 = &bias[(5 + 4) * 5..(5 + 4) * 5 + 5];
    assert_eq!(row1_q4, &[0.0, 0.0, 0.0, -1.0, -1.0]);
    // Row 0, query 1 sees keys 0 and 1 (causal).
    assert_eq!(&bias[5..10], &[0.0, 0.0, -1.0, -1.0, -1.0]);

    let too_long = AssembledBatch::new(&prompts, &slot(2), 2, &special, 4).unwrap_err().to_string();
    assert!(too_long.contains("at most 4"), "{too_long}");
    let missing = AssembledBatch::new(&prompts, &slot(2), 1, &special, 64).unwrap_err().to_string();
    assert!(missing.contains("refers to image 1"), "{missing}");
    let two_slots = [TokenizedPrompt { ids: vec![1, 3, 3, 2], image: Some(0) }];
    assert!(AssembledBatch::new(&two_slots, &slot(2), 1, &special, 64).is_err());
    assert!(AssembledBatch::new(&[], &slot(2), 0, &special, 64).is_err());
}

/// An image slot of `k` tokens with no wrapper ids (the `mini` layout).
fn slot(k: usize) -> ImageSlot {
    ImageSlot { before: vec![], tokens: k, after: vec![] }
}

/// The `smolvlm` layout: the wrapper ids around the image tokens are text positions.
#[test]
fn image_slot_wrapper_tokens_are_text_around_the_image_tokens() {
    let special = SpecialTokens { image_around: Some(7), image_global: Some(8), ..SpecialTokens::default() };
    let prompts = [TokenizedPrompt { ids: vec![1, 9, 3, 2], image: Some(0) }];
    let wrapped = ImageSlot { before: vec![7, 8], tokens: 2, after: vec![7] };
    let batch = AssembledBatch::new(&prompts, &wrapped, 1, &special, 64).unwrap();
    // bos 9 <fake> <global> img img <fake> eos: 8 positions, 6 of them text.
    assert_eq!(batch.lengths, vec![8]);
    assert_eq!(batch.text_ids, vec![1, 9, 7, 8, 7, 2, 0]);
    // The pool is text (7 slots) then the image tokens (rows 7, 8).
    assert_eq!(batch.source, vec![0, 1, 2, 3, 7, 8, 4, 5]);
    let too_long = AssembledBatch::new(&prompts, &wrapped, 1, &special, 7).unwrap_err().to_string();
    assert!(too_long.contains("8 tokens"), "{too_long}");
}
