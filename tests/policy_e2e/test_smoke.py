"""The fixture itself works: an allowed call through the OpenAI SDK carries `policy`."""

import openai


def test_allowed_chat_carries_policy(governed, mock):
    client = openai.OpenAI(base_url=governed.url + "/policy/v1",
                           api_key=governed.keys["proj_support"], max_retries=0)
    reply = client.chat.completions.create(
        model="gpt-x", messages=[{"role": "user", "content": "Where is my order?"}])
    policy = reply.model_extra["policy"]
    assert (policy["project_id"], policy["decision"], policy["allowlist_hits"]) == (
        "proj_support", "allow", ["order"])
    assert mock.requests[-1].json["messages"] == [
        {"role": "user", "content": "Where is my order?"}]
