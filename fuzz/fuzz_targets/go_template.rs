//! Ollama Go templates (a Modelfile `TEMPLATE`): any template and conversation parse
//! and render, or fail with an error; never a panic or a hang.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wick_fuzz::Conversation;
use wick_templating::{GoChat, GoGenerate, GoTemplate};

fuzz_target!(|data: &[u8]| {
    let (source, conv) = Conversation::split(data);
    let Ok(template) = GoTemplate::parse(&source) else {
        return;
    };
    let _ = template.vars();
    let _ = template.thinking_tags();
    let _ = template.tool_call_format();
    let _ = template.render_chat(&GoChat {
        messages: &conv.messages,
        tools: conv.tools.as_deref(),
        think: conv.think.as_ref(),
    });
    let _ = template.render_generate(&GoGenerate {
        system: &conv.system,
        prompt: &conv.prompt,
        suffix: &conv.suffix,
        think: conv.think.as_ref(),
    });
});
