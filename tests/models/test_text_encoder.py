import torch

from models.text_encoder import MAX_TEXT_TOKENS, load_text_encoder, minilm_dir


def test_matches_the_reference_bert_on_the_shipped_weights():
    from transformers import AutoModel, AutoTokenizer

    prompts = ["a red circle moves left", "two small squares bounce"]
    ours, mask = load_text_encoder()(prompts)
    folder = str(minilm_dir())
    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    reference = AutoModel.from_pretrained(folder, local_files_only=True).eval()
    batch = tokenizer(
        prompts, padding="max_length", max_length=MAX_TEXT_TOKENS, return_tensors="pt"
    )
    with torch.no_grad():
        expected = reference(**batch).last_hidden_state
    assert torch.equal(mask, batch["attention_mask"].bool())
    torch.testing.assert_close(ours[mask], expected[mask], atol=1e-4, rtol=1e-4)


def test_per_token_states_with_mask_padding_zeroed_and_empty_prompt_unconditional():
    states, mask = load_text_encoder()(["a blue triangle", "", None, "word " * 200])
    assert states.shape == (4, MAX_TEXT_TOKENS, 384)
    assert mask[0].sum() == 5  # [CLS] a blue triangle [SEP]
    assert not mask[1].any() and not mask[2].any()  # no text: the unconditional input
    assert mask[3].all()  # truncated to 64 tokens
    assert states[~mask].abs().max() == 0
    assert not torch.isnan(states).any()


def test_similar_prompts_are_closer_than_unrelated_ones():
    # a real pretrained encoder, so a new phrasing lands near the trained one
    states, mask = load_text_encoder()(
        ["a red circle moving left", "a crimson disc going leftwards", "a loud drum solo"]
    )
    pooled = torch.nn.functional.normalize(
        (states * mask[..., None]).sum(1) / mask.sum(1, keepdim=True), dim=-1
    )
    assert pooled[0] @ pooled[1] > pooled[0] @ pooled[2]
