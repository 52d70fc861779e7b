//! Jinja chat templates (GGUF `tokenizer.chat_template`): any template and
//! conversation compile and render, or fail with an error; never a panic or a hang.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wick_fuzz::Conversation;
use wick_templating::{render_generate, ChatContext, ChatTemplate, Think, ToolCallFormat};

/// libfuzzer-sys aborts in its panic hook, before any unwinding; wick catches the
/// template engine's own panics (a render error), so let those unwind. A panic that
/// nothing catches still ends in libfuzzer-sys's abort.
fn unwind_engine_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let fuzzer_hook = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let in_engine = info
                .location()
                .is_some_and(|l| l.file().contains("/minijinja-"));
            if !in_engine {
                fuzzer_hook(info);
            }
        }));
    });
}

fuzz_target!(|data: &[u8]| {
    unwind_engine_panics();
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
