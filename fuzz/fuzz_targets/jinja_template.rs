//! Jinja chat templates (GGUF `tokenizer.chat_template`): any template and
//! conversation compile and render, or fail with an error; never a panic or a hang.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wick_fuzz::Conversation;
use wick_templating::{render_generate, ChatContext, ChatTemplate, Think, ToolCallFormat};

fuzz_target!(|data: &[u8]| {
    let (source, conv) = Conversation::split(data);
    let Ok(template) = ChatTemplate::new(&source) else {
        return;
    };
    let _ = template.supports_tools();
    let _ = template.thinking_tags();
    let _ = ToolCallFormat::from_jinja(&template);
    let _ = template.render(&ChatContext {
        messages: &conv.messages,
        tools: conv.tools.as_deref(),
        add_generation_prompt: conv.add_generation_prompt,
        bos_token: conv.bos.clone(),
        eos_token: conv.eos.clone(),
        enable_thinking: conv.think.as_ref().map(Think::enabled),
    });
    let system = (!conv.system.is_empty()).then_some(conv.system.as_str());
    let _ = render_generate(&template, system, &conv.prompt, &conv.bos, &conv.eos);
});
