"""Model answers as safe HTML: Markdown with raw HTML disabled (it shows as text), then sanitised by nh3."""
import markdown
import nh3


def answer_html(text: str) -> str:
    """HTML for a model's answer; `<script>` or `onerror=` in the text show as text and never run."""
    md = markdown.Markdown(extensions=["fenced_code", "sane_lists"])
    md.preprocessors.deregister("html_block")
    md.inlinePatterns.deregister("html")
    return nh3.clean(md.convert(text or ""))
