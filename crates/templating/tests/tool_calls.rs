//! Round trip: a call parsed from Qwen's output, put back into the history and
//! rendered with Qwen's template, reads as the model wrote it.

use wick_templating::{parse_tool_calls, ChatContext, ChatTemplate, Message};

#[test]
fn parsed_qwen_call_renders_back_verbatim() {
    let source = include_str!("templates/qwen2.5-coder.jinja");
    let template = ChatTemplate::new(source).unwrap();
    let output = "<tool_call>\n{\"name\": \"get_current_weather\", \"arguments\": {\"location\": \"São Paulo\", \"days\": 3, \"hourly\": false}}\n</tool_call>";
    let mut n = 0;
    let calls = parse_tool_calls(output, || {
        n += 1;
        format!("call_{n:08}")
    })
    .unwrap();
    let messages = vec![
        Message::new("user", "Weather?"),
        Message {
            tool_calls: Some(calls),
            ..Message::new("assistant", "")
        },
    ];
    let prompt = template
        .render(&ChatContext {
            messages: &messages,
            ..Default::default()
        })
        .unwrap();
    assert!(
        prompt.ends_with(&format!("<|im_start|>assistant\n{output}<|im_end|>\n")),
        "{prompt}"
    );
}
