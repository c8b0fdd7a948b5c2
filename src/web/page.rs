//! The chat page: `page.html` embedded in the binary, and its two placeholders filled in.
//!
//! The page's script reads `const MEMBERS = /*MEMBERS*/[];` and `const NODE = /*NODE*/0;`;
//! [`render`] replaces `/*MEMBERS*/[]` with a JSON array of the members' client addresses and
//! `/*NODE*/0` with the node id. Left raw (the file opened from disk), both still parse. This
//! module never reads files at run time and never fetches anything: the page has no external
//! resources.

/// The page as written, placeholders included.
pub const PAGE_HTML: &str = include_str!("page.html");
/// Replaced by a JSON array of `"host:port"` strings.
pub const MEMBERS_PLACEHOLDER: &str = "/*MEMBERS*/[]";
/// Replaced by the serving node's id.
pub const NODE_PLACEHOLDER: &str = "/*NODE*/0";

/// The page for node `node` whose cluster's client addresses are `members`.
pub fn render(node: u64, members: &[String]) -> String {
    // `<` escaped so no address can close the script element.
    let members = serde_json::to_string(members)
        .unwrap_or_else(|_| "[]".to_string())
        .replace('<', "\\u003c");
    PAGE_HTML
        .replacen(MEMBERS_PLACEHOLDER, &members, 1)
        .replacen(NODE_PLACEHOLDER, &node.to_string(), 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_appear_once_in_the_script() {
        assert_eq!(PAGE_HTML.matches(MEMBERS_PLACEHOLDER).count(), 1);
        assert_eq!(PAGE_HTML.matches(NODE_PLACEHOLDER).count(), 1);
        assert!(PAGE_HTML.contains(&format!("const MEMBERS = {MEMBERS_PLACEHOLDER};")));
        assert!(PAGE_HTML.contains(&format!("const NODE = {NODE_PLACEHOLDER};")));
    }

    #[test]
    fn render_fills_both_placeholders() {
        let members = vec!["127.0.0.1:20000".to_string(), "127.0.0.1:20001".to_string()];
        let page = render(2, &members);
        assert!(page.contains(r#"const MEMBERS = ["127.0.0.1:20000","127.0.0.1:20001"];"#));
        assert!(page.contains("const NODE = 2;"));
        assert!(!page.contains("/*MEMBERS*/") && !page.contains("/*NODE*/"));
    }

    #[test]
    fn odd_addresses_cannot_break_out_of_the_script() {
        let page = render(1, &["</script><b>\"x".to_string()]);
        assert!(page.contains(r#"const MEMBERS = ["\u003c/script>\u003cb>\"x"];"#));
        assert_eq!(page.matches("</script>").count(), 1);
    }

    #[test]
    fn the_page_is_self_contained() {
        for external in ["http://", "https://", "src=", "href=\"/", "@import", "url("] {
            assert!(!PAGE_HTML.contains(external), "{external}");
        }
        // It speaks the JSON protocol over /ws.
        assert!(PAGE_HTML.contains("+ \"/ws\""));
        for kind in ["msg", "nick", "join", "leave", "rooms", "history"] {
            assert!(PAGE_HTML.contains(&format!("type: \"{kind}\"")), "{kind}");
        }
    }
}
