"""The shell code of the completion scripts, as templates (pure text; placeholders like
@FROM@ are filled by :mod:`hotswap_cli.completion_scripts`)."""

# hs models --json (indent=2) -> want=models: names; want=versions|specs and model=NAME:
# NAME's versions (or NAME@VERSION). A row without "versions" (an older hs) offers its
# active "version". No single quotes or backslashes: it is pasted into all three shells.
LIST_AWK = """
function value(s) { sub(/^ *"[^"]*": /, "", s); gsub(/[",]/, "", s); sub(/^ */, "", s); return s }
function flush(  n, i, v) {
    if (name != "" && want == "models") print name
    if (name != "" && name == model) {
        n = split(seen ? list : active, v, " ")
        for (i = 1; i <= n; i++) print (want == "specs" ? name "@" : "") v[i]
    }
    name = ""; active = ""; list = ""; seen = 0
}
/^  [{]/ { flush() }
inlist && /^    ]/ { inlist = 0; next }
inlist { list = list " " value($0); next }
/^    "name": "/ { name = value($0) }
/^    "version": "/ { active = value($0) }
/^    "versions": [[]/ { seen = 1; inlist = index($0, "]") == 0 }
END { flush() }
""".strip("\n")

SH_WALK = r"""    for ((i = @FROM@; i < @TO@; i++)); do
        w="${words[i]}"
        if [[ -n $opt ]]; then opt=""; continue; fi
        if [[ -n $dd ]]; then _hs_args+=("$w"); continue; fi
        case "$w" in
            --) dd=1;;
            -*=*) ;;
            -*) [[ $valued == *"|$path_:$w|"* ]] && opt="$w";;
            *) if ((${#_hs_args[@]} == 0)) && [[ $transitions == *"|$path_:$w|"* ]]; then path_="${path_:+$path_ }$w"; start=$i; else _hs_args+=("$w"); fi;;
        esac
    done"""

BASH_BODY = r"""_hs_add() {  # the lines on stdin that start with $cur, as replies
    local c
    while IFS= read -r c; do [[ $c == "$cur"* ]] && COMPREPLY+=("$pre$c"); done
}
_hs() {
    local -a words=() _hs_args=()
    local line="${COMP_LINE:0:COMP_POINT}" rest w i start opt="" dd="" path_="" pre="" kind="" choices="" model=""
    # COMP_WORDBREAKS splits --model=m@v1 into five words; to hs it is one: join them back.
    for ((i = 0; i <= COMP_CWORD; i++)); do
        w="${COMP_WORDS[i]}"
        rest="${line#"${line%%[![:space:]]*}"}"
        if ((i > 0)) && [[ $rest == "$line" ]]; then words[-1]+="$w"; else words+=("$w"); fi
        line="${rest#"$w"}"
    done
    local cur="${words[-1]}"
@WALK@
    if [[ -z $opt && -z $dd && $cur == -*=* ]]; then opt="${cur%%=*}"; pre="$opt="; cur="${cur#*=}"; fi
    if [[ -n $opt ]]; then
        case "$path_:$opt" in
@OPTIONS@
        esac
    elif [[ -z $dd && $cur == -* ]]; then
        kind=choices
        case "$path_" in
@FLAGS@
        esac
    else
        case "$path_:${#_hs_args[@]}" in
@POSITIONS@
        esac
    fi
    [[ $kind == specs ]] && { [[ $cur == *@* ]] && model="${cur%%@*}" || kind=models; }
    [[ $kind == versions ]] && model="${_hs_args[0]}"
    COMPREPLY=()
    case "$kind" in
        choices) _hs_add < <(printf '%s\n' $choices);;
        files) compopt -o filenames 2>/dev/null; _hs_add < <(compgen -f -- "$cur");;
        models|versions|specs) _hs_add < <(_hs_list "$kind" "$model");;
    esac
    # Bash replaces only its own last word (what follows a = or @): keep just that part.
    local before="${words[-1]%"${COMP_WORDS[COMP_CWORD]}"}"
    [[ -n $before ]] && COMPREPLY=("${COMPREPLY[@]#"$before"}")
    return 0
}
"""

ZSH_HEAD = """_hs_offer() {  # _hs_offer models | versions MODEL | specs MODEL
    local expl; local -a found=(${(f)"$(_hs_list "$1" "$2")"})
    _wanted "$1" expl "${1%s}" compadd -a found
}
_hs_models() { _hs_offer models }
_hs_versions() { _hs_offer versions "${_hs_args[1]}" }
_hs_specs() { if [[ $PREFIX == *@* ]]; then _hs_offer specs "${PREFIX%%@*}"; else _hs_models; fi }
_hs() {
    local path_="" i w opt="" dd="" start=1
    local -a _hs_args
@WALK@
    words=("${(@)words[start,-1]}")
    (( CURRENT -= start - 1 ))
    case "$path_" in"""

FISH_HEAD = """function __hs_state --description 'hs: the command path, option and arguments before the cursor'
    set -l key (commandline -pc | string join \\n)
    test "$key" = "$__hs_key"; and return
    set -g __hs_key $key
    set -g __hs_path ''; set -g __hs_opt ''; set -g __hs_args
    set -l dd ''
    for w in (commandline -opc)[2..]
        if test -n "$__hs_opt"; set __hs_opt ''; continue; end
        if test -n "$dd"; set -a __hs_args $w; continue; end
        switch $w
            case --
                set dd 1
            case '-*=*'
            case '-*'
                contains -- "$__hs_path:$w" $__hs_valued; and set __hs_opt $w
            case '*'
                if test (count $__hs_args) -eq 0; and contains -- "$__hs_path:$w" $__hs_transitions
                    set __hs_path (string trim -- "$__hs_path $w")
                else
                    set -a __hs_args $w
                end
        end
    end
end
function __hs_at --argument-names path --description 'hs: the words so far name this command'
    __hs_state
    test "$__hs_path" = "$path"
end
function __hs_arg --argument-names path n --description 'hs: the cursor is on positional argument n (n+: or later)'
    __hs_state
    test "$__hs_path" = "$path" -a -z "$__hs_opt"; or return 1
    set -l have (count $__hs_args)
    if string match -q -- '*+' $n
        test $have -ge (string trim -c + -- $n)
    else
        test $have -eq $n
    end
end
function __hs_versions
    __hs_state
    __hs_list versions "$__hs_args[1]"
end
function __hs_specs
    set -l cur (commandline -ct | string replace -r -- '^(--[^=]*=|-[^-])' '')
    string match -q -- '*@*' $cur; or begin; __hs_list models; return; end
    __hs_list specs (string split -m 1 @ -- $cur)[1]
end
"""
