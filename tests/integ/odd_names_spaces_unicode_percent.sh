#!/usr/bin/env bash
# Names that URLs and autoindex pages must escape: spaces, unicode, '%' (alone and as a
# would-be escape), '+', '#', '?', '&', quotes, '<>', a leading dash, a 255-byte name. Every
# one is listed under its real name and reads back as the source's bytes. (nginx autoindex
# hides dotfiles, so those are in manifest_mount_lists_with_one_request.sh.)
. "$(dirname "$0")/lib.sh"
need_fuse
"$PY" - "$T/src" <<'PY'
import os, sys
root = sys.argv[1]
os.makedirs(root, exist_ok=True)
names = ["with space", "two  spaces ", "caf\u00e9", "\u65e5\u672c\u8a9e.txt", "emoji \U0001F680",
         "100%", "%20literal", "%zz", "%", "a+b", "hash#tag", "what?", "a&b=c;d", "it's",
         'say "hi"', "<angle>", "-leading-dash", "[brackets]", "tab\there", "back\\slash",
         "x" * 255, "\u00e9" * 127, "trailing.", "=eq", "~tilde", "`tick`"]
for i, n in enumerate(names):
    with open(os.path.join(root, n), "wb") as f:
        f.write(os.urandom(i * 37 + 1))
d = os.path.join(root, "dir with space %41 \u00fc")
os.makedirs(d)
for n in ["inner file", "inner%2Fslash", "\u00fc"]:
    with open(os.path.join(d, n), "wb") as f:
        f.write(os.urandom(1000))
PY
serve_nginx "$T/src"
mount_ferry "http://127.0.0.1:$PORT/" "$T/mnt"
same_tree "$T/src" "$T/mnt"
umount_ferry "$T/mnt"

log "a URL whose own path is percent-encoded"
mount_ferry "http://127.0.0.1:$PORT/dir%20with%20space%20%2541%20%C3%BC/" "$T/mnt" \
	--cache-dir "$T/cache2"
same_tree "$T/src/dir with space %41 ü" "$T/mnt"
umount_ferry "$T/mnt"
pass
