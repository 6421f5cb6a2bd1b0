//! umT5 text encoder and tokenizer against transformers' UMT5EncoderModel.

mod common;

use candle_core::{DType, Device, Tensor};
use common::{assert_close, case, load, model_dir, CONFIGS};
use kinema_wan::prompt::{prompt_clean, PromptTokenizer, MAX_SEQUENCE_LENGTH};
use kinema_wan::text_encoder::{relative_position_bucket, Umt5Config, Umt5Encoder};

#[test]
fn relative_buckets_match_reference() {
    for config in CONFIGS {
        let f = load(config, "text_encoder.safetensors");
        let rel = f["relative_positions"].to_vec1::<i64>().unwrap();
        let want = f["relative_buckets"].to_vec1::<i64>().unwrap();
        let dir = model_dir(config).join("text_encoder");
        let c = Umt5Config::from_dir(&dir).unwrap();
        for (r, w) in rel.iter().zip(&want) {
            let got = relative_position_bucket(
                *r,
                c.relative_attention_num_buckets,
                c.relative_attention_max_distance,
            );
            assert_eq!(got as i64, *w, "{config}: bucket of {r}");
        }
    }
}

#[test]
fn prompts_clean_and_tokenize_like_reference() {
    for config in CONFIGS {
        let c = case(config);
        let f = load(config, "text_encoder.safetensors");
        let ids = f["input_ids"].to_vec2::<i64>().unwrap();
        let mask = f["attention_mask"].to_vec2::<i64>().unwrap();
        let tok = PromptTokenizer::load(&model_dir(config).join("tokenizer"), MAX_SEQUENCE_LENGTH)
            .unwrap();
        let prompts = [&c["prompt"], &c["negative_prompt"]];
        for (i, p) in prompts.iter().enumerate() {
            let p = p.as_str().unwrap();
            assert_eq!(
                prompt_clean(p),
                c["cleaned_prompts"][i].as_str().unwrap(),
                "{config}: clean"
            );
            let t = tok.encode(p).unwrap();
            let want_ids: Vec<u32> = ids[i].iter().map(|&v| v as u32).collect();
            let want_mask: Vec<u32> = mask[i].iter().map(|&v| v as u32).collect();
            assert_eq!(t.ids, want_ids, "{config}: ids of prompt {i}");
            assert_eq!(t.mask, want_mask, "{config}: mask of prompt {i}");
        }
    }
}

#[test]
fn umt5_encoder_matches_reference() {
    for config in CONFIGS {
        let f = load(config, "text_encoder.safetensors");
        let enc = Umt5Encoder::load(
            &model_dir(config).join("text_encoder"),
            DType::F32,
            &Device::Cpu,
        )
        .unwrap();
        let ids = f["input_ids"].to_dtype(DType::U32).unwrap();
        let mask = &f["attention_mask"];
        let got = enc.forward(&ids, mask).unwrap();
        assert_close(
            &format!("{config} umt5 last_hidden_state"),
            &got,
            &f["last_hidden_state"],
        );
        // the pipeline's embeddings: cut to the true length, zero-padded
        let m = mask.to_dtype(DType::F32).unwrap().unsqueeze(2).unwrap();
        let masked = got.broadcast_mul(&m).unwrap();
        let want = Tensor::cat(&[&f["prompt_embeds"], &f["negative_prompt_embeds"]], 0).unwrap();
        assert_close(&format!("{config} umt5 prompt_embeds"), &masked, &want);
    }
}
