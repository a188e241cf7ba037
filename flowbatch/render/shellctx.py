"""A small bash lexer: the quoting context of every character of a command text.

Rendering needs one fact about each placeholder: how the shell will read the text that
replaces it. Unquoted text is split into words and globbed, text inside ``"..."`` is
expanded but not split, text inside ``'...'`` (or ``$'...'``, or a here-document with a
quoted delimiter) is not expanded at all, a comment is not read, and a character right
after a backslash is escaped. Text that bash evaluates as an *arithmetic expression* is
reported apart (:attr:`Ctx.ARITH`): there bash expands a value and then evaluates it again,
and an array subscript in that value (``a[$(cmd)]``) runs a command, whatever the quotes.
This module answers these questions without running bash.

It follows bash's rules for quotes, backslashes, ``$(...)``, ``<(...)``, ``>(...)``,
``$((...))``, backticks (a new unquoted context, even inside double quotes, nested to any
depth), ``#`` comments at the start of a word and here-documents (an expanding one's body
is read as inside double quotes, a ``"`` there being a character). An unquoted
``${name...}`` is one piece of its word up to its matching ``}`` (braces, quotes, escapes
and substitutions inside it counted as bash counts them): bash splits the *result* of
``${x:- -v}`` into words, not its text, so a blank, ``;``, ``|``, ``&``, ``<``, ``>`` or
a parenthesis inside it ends no word and is no operator (``n=${f// /_}`` is one
assignment, ``${v/;/x}`` ends no command), and a newline inside it starts no
here-document's body; a process substitution inside it is one (``${x:-<(cmd)}``: bash
runs it there too). It reads commands word by word, enough to find the arithmetic
places: ``$((...))``, ``$[...]``, an arithmetic command ``((...))`` (also ``for
((...))``), the operands of ``-eq -ne -lt -le -gt -ge`` in
``[[ ... ]]``, the arguments of ``let``, the assignments of
``declare``/``typeset``/``local`` with ``-i``, the subscript of ``name[...]`` at the start
of a word, of ``[...]=`` in an array assignment ``name=(...)`` and of ``${name[...]}``,
and the offset and length of ``${name:offset:length}``. Everything inside such a place is
arithmetic, quotes and ``$(...)`` included (the output of a command substitution is
evaluated too).

It also reads what each simple command does with its words (:func:`command_places`): a
value assigned to a variable bash evaluates as arithmetic (:data:`SPECIAL_INTEGERS`:
``RANDOM=``, ``export OPTIND=``, ``read RANDOM``, ``printf -v OPTIND``, ``for RANDOM
in``) is arithmetic (that assignment only; for ``read``/``mapfile``, what it reads from
standard input); a word read as a variable's name (``printf -v``, ``read``, ``mapfile``,
``unset``, ``[[ -v ]]``, ``test -v``, ``declare -n``, a ``declare`` word that is not
``name=value``) is :attr:`Ctx.NAME` (bash evaluates a subscript in a name); and program
text handed to another interpreter is :attr:`Ctx.CODE`: a command's name (at the command
position or after wrappers: it chooses the program), the arguments of ``eval``,
``trap`` and ``alias``, ``compgen -W``, ``mapfile -C``, the command string of ``sh``/``bash``/...
``-c`` (``csh``, ``tcsh``, ``fish`` too), of ``python* -c`` and ``ipython -c``, gdb's
``-ex`` commands, ``perl``/``ruby``/``node``/``Rscript``/``R``/``julia``/
``lua``/``gnuplot`` ``-e``, ``expect -c``, ``octave --eval``, ``matlab -batch``/``-r``,
the script of ``sed``, ``awk`` and ``jq``, the SQL of ``sqlite3``/``duckdb DB "..."``,
``psql -c``, ``mysql -e``, the remote command of ``ssh``, ``su``/``runuser``/``flock
-c``, ``env -S``, ``watch``, ``hyperfine``, ``bsub``'s command, GNU ``parallel``'s
command words (its ``:::`` arguments or input lines when it has none), ``sbatch --wrap``,
``make``'s ``VAR=value`` arguments and environment (make expands ``$(shell ...)`` there),
a process substitution given as a program's file (``bash <(...)``, ``source <(...)``,
``awk -f <(...)``: its commands' output is the program); and what a program reads as its
code from standard input (``python3 -``, ``bash -s``, ``R``, ``julia``, ``lua``,
``sqlite3``/``duckdb DB``, ``psql``, ``mysql``, ``tclsh``, a shell or ``source`` given
``/dev/stdin``, a program's file given as standard input (``awk -f -``),
``sbatch``/``qsub``/``bsub`` without a script, ``salloc`` or ``singularity shell``
without a command, ``ssh host bash``, ``xargs -I R`` when ``R`` is
in program text): its unquoted here-documents, its here-strings and ``< <(...)``, and the
output of the commands before it in its pipeline (a compound command or subshell there
whole: ``{ ...; } | bash``), not its own arguments, environment or ``<`` file. A program
is recognised at the command position (after ``!``, ``time``, ``command``, ``builtin``)
or after a wrapper and its options (``env A=1``, ``exec``, ``nice -n 5``, ``nohup``,
``timeout 10``, ``stdbuf``, ``taskset``, ``numactl``, ``systemd-run``,
``srun``/``salloc``, ``mpirun``/``mpiexec``, ``sudo -u``, ``runuser -u``, ``xargs``,
``singularity``/``apptainer exec IMAGE``, ``docker``/ ``podman run``/``exec IMAGE``,
``conda``/``uv``/``poetry run``, ``flock FILE``, ``strace``, ``chrt``...); an option of a
wrapper not known here takes the next word as its argument unless that word names a known
program or wrapper (then it is the command): it may find a program in a plain argument
after such an option, which only refuses more. ``${python}`` (a site variable not
expanded) is Python.

Known simplifications: a ``case`` pattern's bare ``)`` inside ``$(...)`` ends the
substitution early, ``((`` at the start of a command is always taken for an arithmetic
command (bash falls back to nested subshells; write ``( (``), and a ``"`` inside a
double-quoted ``"${v:-...}"`` is taken to end the outer quotes (bash nests them there).
Not detected: a variable
named inside arithmetic is evaluated too, and the lexer does not follow variables (``n=$x;
(( n > 1 ))``, ``$(( FB_n ))``, an assignment ``n=$x`` to a variable declared ``-i``
earlier, ``${!x}``, ``cmd=python3; $cmd -c``); a subscript inside a quoted word handed to
a builtin as a name (``printf -v "a[$x]"``); a name given through a variable or an alias;
a program (or ``make``) run by a wrapper not named here (``mywrap python3 -c "$x"``) or
through a shell (``sudo -s cmd``); output fed to a program inside an output process
substitution (``echo "$x" | tee >(bash)``) or through a file descriptor other than
standard input; and a value that reaches another program's language in a way no command
line shows: written to a file the template then runs or sources, piped to a program not
named here, read by a program of the template's own that evaluates it (a ``Makefile``
naming ``$(FB_x)``: make expands every variable of its environment). Some text is reported
arithmetic, a name or program text where bash evaluates nothing (a glob ``file[...]`` at
the start of a word, an associative array's key, ``unset -f f``, ``xargs python3`` given
input on a pipe), which only refuses more.

It also records which variables each simple command gives a value to, and from which
words (:attr:`Scan.flows`, see :mod:`~flowbatch.render.shellvars`), and where each
command substitution's text is (:attr:`Scan.subs`): the options check follows a value
through the variables of a command text with them (:mod:`~flowbatch.render.taint`).
With them, and the functions the text defines (where each body is) and calls, program
text is followed back to the words it comes from (:mod:`~flowbatch.render.codeflow`:
``m=$x; eval "$m"``, ``f() { eval "$@"; }; f $x``): those are program text too, in
:attr:`Scan.contexts`, so that the code check sees them where it sees the others."""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import NamedTuple

from flowbatch.render.codeflow import COMMAND_NAME, _shown, program_sources
from flowbatch.render.ere import captures
from flowbatch.render.shellvars import (
    ANY,
    ANY_VARIABLE,
    Flow,
    _closing,
    command_flows,
    expansion_flow,
    match_flows,
    with_group_inputs,
)


class Ctx(StrEnum):
    """How the shell reads a character."""

    UNQUOTED = "unquoted"
    DOUBLE = "double"  # inside "...", or the body of an expanding here-document
    SINGLE = "single"  # inside '...' or $'...', or a literal here-document body
    ESCAPED = "escaped"  # right after a backslash that escapes it
    COMMENT = "comment"
    ARITH = "arithmetic"  # evaluated as an arithmetic expression (quoted or not)
    NAME = "name"  # the name of a variable (printf -v, read, [[ -v ]]): a subscript runs
    CODE = "code"  # program text: of eval, trap, bash -c, python -c, sed, awk, ssh...


#: ``${name:=`` or ``${name=`` (an array's element too): an expansion that assigns
_ASSIGNING_OPEN = re.compile(r"\$\{[A-Za-z_][A-Za-z0-9_]*(?:\[[^\]]*\])?:?=")

#: characters that end a here-document delimiter word
_DELIM_END = frozenset(" \t\n;&|()<>")
#: unquoted characters that end a word
_BLANKS = frozenset(" \t\n")
_OPERATORS = frozenset(";&|()<>")

#: the contexts an arithmetic place overrides, and those a name or program text does
_OVERRIDDEN = frozenset({Ctx.UNQUOTED, Ctx.DOUBLE, Ctx.SINGLE, Ctx.CODE, Ctx.NAME})
_OVERRIDDEN_BY_PLACES = frozenset({Ctx.UNQUOTED, Ctx.DOUBLE, Ctx.CODE, Ctx.NAME})
#: frames whose text is commands (read word by word)
_SHELL_KINDS = frozenset({"top", "cmdsub", "backtick"})
#: frames whose text is evaluated as arithmetic
_ARITH_KINDS = frozenset({"arith", "arithcmd", "arithbr", "subscript", "offset"})
#: ``param``: an unquoted ``${...}`` (read unquoted, no word or operator in it)
_UNQUOTED_KINDS = _SHELL_KINDS | _ARITH_KINDS | {"cond", "param"}
#: the words that may come before a command name, keeping the command position
_OPENERS = frozenset(
    {"!", "{", "then", "do", "else", "elif", "if", "while", "until", "time", "coproc"}
    | {"command", "builtin"}
)
#: the words that open and close a compound command (its pipeline begins before it)
_GROUP_OPEN = frozenset({"{", "if", "while", "until", "for", "select", "case"})
_GROUP_CLOSE = frozenset({"}", "fi", "done", "esac"})
#: the characters a regular expression reads as its own (a quoted one is escaped)
_ERE_SPECIAL = frozenset(".[]()*+?{}|^$\\")
#: a variable a word expands: ``$name``, ``${name``, ``$1``, ``$@``, ``${!``
_EXPANDS = re.compile(r"\$\{?!?([A-Za-z_][A-Za-z0-9_]*|[0-9@*])")
#: a variable a text reads when evaluated: ``$name``, ``${name``, ``$1``, ``$@``;
#: ``${!``: an indirection (any variable)
_EVAL_READS = re.compile(r"\$\{?([A-Za-z_][A-Za-z0-9_]*|[0-9@*])|\$\{(!)")
#: a command's name that is one variable's expansion: ``$e``, ``"$e"``, ``${cmd[@]}``
#: (quoted or not, the variable, its subscript, or the variable without braces)
_NAMED_BY = re.compile(
    r'("?)\$(?:\{([A-Za-z_][A-Za-z0-9_]*)(\[[^\]]*\])?\}|([A-Za-z_][A-Za-z0-9_]*))\1'
)
#: a named variable's expansion in an eval's text before eval runs (``"$n"``, ``${n}``,
#: ``${n[@]}``, ``${n:-...}``): its values are the text
_HELD = re.compile(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)")
#: a value that is one positional parameter (or all of them): followed by codeflow
_POSITIONAL_ONLY = re.compile(r'("?)\$(?:\{[0-9@*]+\}|[0-9@*])\1')
#: a closing quote, read in the context it closes
_CLOSING_QUOTES = frozenset({("'", Ctx.SINGLE), ('"', Ctx.DOUBLE)})
#: the builtins that read their standard input into variables
_READERS = frozenset({"read", "mapfile", "readarray"})
#: the binary operators of [[ ... ]] whose operands are arithmetic
_ARITH_TESTS = frozenset({"-eq", "-ne", "-lt", "-le", "-gt", "-ge"})
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_ASSIGNMENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\[.*\])?\+?=", re.DOTALL)
_INTEGER_OPTION = re.compile(r"-[A-Za-z]*i[A-Za-z]*")
#: ``${``, an optional ``#``/``!``, and a parameter name or a special parameter
#: (``$?``, ``$$``, ``$#``, ``$-``, ``$!``, ``$@``...): a subscript or offset may follow
_PARAMETER = re.compile(r"\{[#!]?([A-Za-z_][A-Za-z0-9_]*|[0-9]+|[@*?$#!_-])")


# -- what a command does with its words --------------------------------------------------
#: bash evaluates a value assigned to these variables as an arithmetic expression, as if
#: they were declared ``-i`` (bash 5.2; ``LINENO``, ``SECONDS`` and the like are not)
SPECIAL_INTEGERS = frozenset({"RANDOM", "SRANDOM", "OPTIND", "HISTCMD"})


@dataclass(frozen=True)
class _Program:
    """How a command reads its arguments: which are program text (``code``), which are
    variable names (``names``). Short options are letters; ``takes``: other options with
    an argument; ``files``: options giving the program in a file; ``ends``: options after
    whose argument the rest are data (``python -c``); ``deferred``: options making the
    first positional argument program text (``bash -c``); ``positionals``: what the
    positional arguments are (``first``: the first is the program unless an option gave
    one, ``rest``: all after the first, ``all``, ``names``); ``stdin``: it reads its
    program from standard input when given none; ``script``: its first positional
    argument (unless an option gave the program) is its program's file (``<(...)`` there
    is program text, ``/dev/stdin`` reads standard input), else it never is one (``R``);
    ``dash_long``: its long options begin with one dash (``sqlite3 -cmd``); ``permute``:
    its options may follow its positional arguments (``su user -c``); ``takes2_long``:
    long options with two arguments (``jq --arg name value``)."""

    code: str = ""
    code_long: tuple[str, ...] = ()
    names: str = ""
    takes: str = ""
    takes_long: tuple[str, ...] = ()
    files: str = ""
    files_long: tuple[str, ...] = ()
    ends: str = ""
    deferred: str = ""
    positionals: str = ""
    stdin: bool = False
    stdin_opts: str = ""
    script: bool = True
    dash_long: bool = False
    permute: bool = False
    takes2_long: tuple[str, ...] = ()


_SHELL = _Program(
    takes="oO", takes_long=("--rcfile", "--init-file"), deferred="c", stdin=True, stdin_opts="s"
)
_PYTHON = _Program(code="c", takes="WXQ", ends="cm", stdin=True)
_PERL = _Program(code="eE", stdin=True)
_RUBY = _Program(code="e", takes="Ir", stdin=True)
_NODE = _Program(
    code="ep",
    code_long=("--eval", "--print"),
    takes="r",
    takes_long=("--require", "--import"),
    stdin=True,
)
_SED = _Program(
    code="e",
    code_long=("--expression",),
    takes="l",
    files="f",
    files_long=("--file",),
    positionals="first",
)
_AWK = _Program(
    code="e",
    code_long=("--source",),
    takes="Fvil",
    files="f",
    files_long=("--file",),
    positionals="first",
)
_SSH = _Program(takes="BbcDEeFIiJLlmOopQRSWw", positionals="rest", stdin=True, script=False)
_DASH_C = _Program(code="c", code_long=("--command",), takes="sgG", permute=True, script=False)


def _opts(names: str, dashes: tuple[str, ...] = ("--",)) -> tuple[str, ...]:
    """Long options, from their names separated by blanks."""
    return tuple(dash + name for dash in dashes for name in names.split())


#: Slurm's options with an argument (sbatch, salloc and srun share most)
_SLURM_TAKES = "AbcCdDeGiJLmMnNopqStTwWx"
_SLURM_TAKES_LONG = _opts(
    "account array begin chdir clusters comment constraint cpus-per-gpu cpus-per-task "
    "dependency distribution error exclude export gpus gpus-per-node gpus-per-task "
    "gres input job-name jobid licenses mail-type mail-user mem mem-per-cpu "
    "mem-per-gpu mincpus mpi nodelist nodes ntasks ntasks-per-node output partition "
    "qos reservation signal time time-min wckey"
)
#: external programs, by the name they are run as (its last path component)
_PROGRAMS: dict[str, _Program] = {
    **dict.fromkeys(("sh", "bash", "dash", "zsh", "ksh", "mksh", "ash", "yash"), _SHELL),
    **dict.fromkeys(("fish", "tcsh", "csh"), _SHELL),  # -c CODE, commands on stdin
    **dict.fromkeys(("ipython", "ipython3"), _PYTHON),
    "perl": _PERL,
    "ruby": _RUBY,
    **dict.fromkeys(("node", "nodejs"), _NODE),
    "R": _Program(code="e", files="f", files_long=("--file",), stdin=True, script=False),
    "Rscript": _Program(code="e", stdin=True),
    "julia": _Program(
        code="eE",
        code_long=("--eval", "--print"),
        takes="JptC",
        files="L",
        files_long=("--load",),
        takes_long=("--sysimage", "--procs", "--threads", "--machine-file"),
        stdin=True,
    ),
    **dict.fromkeys(("lua", "luajit"), _Program(code="e", takes="l", stdin=True)),
    **dict.fromkeys(("tclsh", "wish", "osascript"), _Program(code="e", stdin=True)),
    "expect": _Program(code="c", files="f", takes="D", stdin=True),
    "gnuplot": _Program(code="e", files="c", ends="c", stdin=True),
    **dict.fromkeys(
        ("octave", "octave-cli"),
        _Program(
            code_long=("--eval",), takes="p", takes_long=("--path", "--exec-path"), stdin=True
        ),
    ),
    "matlab": _Program(
        code_long=("-batch", "-r"),
        takes_long=("-sd", "-logfile", "-c"),
        dash_long=True,
        stdin=True,
        script=False,
    ),
    "sqlite3": _Program(
        code_long=("-cmd",),
        takes_long=("-init", "-separator", "-nullvalue", "-newline", "-vfs", "-mmap"),
        dash_long=True,
        positionals="rest",
        stdin=True,
        script=False,
    ),
    "php": _Program(code="r", stdin=True),
    # database shells read SQL (and shell escapes: psql \!, sqlite3 .shell) from stdin
    "psql": _Program(
        code="c",
        code_long=("--command",),
        files="f",
        files_long=("--file",),
        takes="dhpUvoPTFRLS",
        takes_long=("--dbname", "--host", "--port", "--username", "--set", "--variable"),
        stdin=True,
        script=False,
    ),
    **dict.fromkeys(
        ("mysql", "mariadb"),
        _Program(
            code="e",
            code_long=("--execute",),
            takes="uhPDSO",
            takes_long=("--user", "--host", "--port", "--database", "--socket"),
            stdin=True,
            script=False,
        ),
    ),
    "duckdb": _Program(
        code_long=("-cmd", "-c", "-s"),
        takes_long=("-init", "-separator", "-nullvalue", "-newline"),
        dash_long=True,
        positionals="rest",
        stdin=True,
        script=False,
    ),
    # jq's filter is a program (it reads $ENV and files); --arg passes data
    "jq": _Program(
        files="fL",
        files_long=("--from-file",),
        takes_long=("--indent",),
        takes2_long=("--arg", "--argjson", "--slurpfile", "--rawfile"),
        positionals="first",
    ),
    **dict.fromkeys(("sed", "gsed"), _SED),
    **dict.fromkeys(("awk", "gawk", "mawk", "nawk"), _AWK),
    # gdb's -ex commands include `shell` and `python`
    "gdb": _Program(
        code_long=_opts("ex iex eval-command init-eval-command", dashes=("-", "--")),
        files="x",
        files_long=_opts("command x", dashes=("-", "--")),
        takes_long=_opts("cd directory pid core symbols exec tty", dashes=("-", "--")),
        dash_long=True,
        script=False,
    ),
    "ssh": _SSH,
    **dict.fromkeys(("su", "runuser", "script"), _DASH_C),
    "watch": _Program(takes="nd", positionals="all", script=False),
    # batch systems read a job script from standard input when given no file; LSF's bsub
    # runs its command words through a shell, and its -E/-Ep commands
    "sbatch": _Program(
        code_long=("--wrap",), takes=_SLURM_TAKES, takes_long=_SLURM_TAKES_LONG, stdin=True
    ),
    "qsub": _Program(takes="AacCeIjlMmNoPpqrSuvWW", stdin=True),
    "bsub": _Program(
        code_long=("-E", "-Ep"),
        takes_long=_opts(
            "n q J o e oo eo W We R M P G m w app gpu env outdir cwd i u sp c L Lp g sla",
            dashes=("-",),
        ),
        dash_long=True,
        positionals="all",
        stdin=True,
    ),
    # hyperfine runs its arguments (and -p/-c/-s commands) through a shell
    "hyperfine": _Program(
        code="pcs",
        code_long=("--prepare", "--cleanup", "--setup", "--conclude"),
        takes="wrmMSnuNLP",
        positionals="all",
        script=False,
    ),
}
_VERSIONED = re.compile(r"(python|pypy|perl|ruby|php|lua|tclsh)[0-9.]*")
#: a site variable standing for an interpreter (``${python}`` when it is not expanded)
_VARIABLE_WORD = re.compile(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?")
#: file names that are a program's standard input
_STDIN_FILES = frozenset({"-", "/dev/stdin", "/dev/fd/0", "/proc/self/fd/0"})
#: builtins, as a command's name
_BUILTINS: dict[str, _Program] = {
    "read": _Program(names="a", takes="dinNptu", positionals="names", script=False),
    "printf": _Program(names="v", script=False),
    "mapfile": _Program(code="C", takes="dnOsuc", positionals="names", script=False),
    "readarray": _Program(code="C", takes="dnOsuc", positionals="names", script=False),
    "compgen": _Program(code="WC", takes="oAGXPSF", script=False),
    "complete": _Program(code="WC", takes="oAGXPSF", script=False),
    "eval": _Program(positionals="all", script=False),
    "trap": _Program(positionals="all", script=False),
    # an alias's text is read again as commands where its name is (expand_aliases)
    "alias": _Program(positionals="all", script=False),
    "unset": _Program(positionals="names", script=False),
    "source": _Program(),  # its first argument is a file of commands
    ".": _Program(),
}
_DECLARES = frozenset({"declare", "typeset", "local", "export", "readonly"})


@dataclass(frozen=True)
class _Wrapper:
    """A command that runs the command given in its arguments (``env``, ``srun``,
    ``timeout``...): its short options without an argument (``flags``), with one
    (``takes``), whose argument is program text (``code``), the same for long options;
    ``takes2``: long options with two arguments (``mpirun --mca key value``);
    ``lead``: positional words before the command (``timeout DURATION``, an image);
    ``assigns``: ``NAME=value`` words may come before the command; ``subs``: the
    subcommands that run a command (``docker run``); ``bare``: run with no command, it
    runs a shell reading standard input (``salloc``, ``singularity shell``)."""

    flags: str = ""
    takes: str = ""
    code: str = ""
    flags_long: tuple[str, ...] = ()
    takes_long: tuple[str, ...] = ()
    code_long: tuple[str, ...] = ()
    takes2: tuple[str, ...] = ()
    lead: int = 0
    assigns: bool = False
    subs: tuple[str, ...] = ()
    bare: bool = False


_SLURM_WRAPPER = _Wrapper(
    flags="EHklOQsuvVXZIK",
    takes=_SLURM_TAKES,
    flags_long=_opts(
        "exclusive pty overlap label unbuffered verbose quiet exact no-kill "
        "kill-on-bad-exit oversubscribe overcommit disable-status preserve-env "
        "test-only immediate"
    ),
    takes_long=_SLURM_TAKES_LONG,
    code_long=("--wrap",),
)
_CONTAINER = _Wrapper(
    flags="cCeipuwf",
    takes="BHWoS",
    flags_long=_opts(
        "nv rocm contain containall cleanenv writable writable-tmpfs fakeroot userns "
        "no-home no-init compat"
    ),
    takes_long=_opts(
        "bind home workdir overlay scratch pwd env env-file app security network "
        "network-args mount hostname dns"
    ),
    lead=1,
)
_DOCKER = _Wrapper(
    flags="dPitq",
    takes="acehlmpuvw",
    flags_long=_opts("rm init privileged interactive tty detach read-only quiet"),
    takes_long=_opts(
        "name entrypoint env volume workdir user network gpus shm-size memory cpus mount "
        "env-file platform label hostname ipc runtime ulimit device add-host cap-add "
        "security-opt publish pull cidfile tmpfs"
    ),
    lead=1,
    subs=("run", "exec"),
)
_MPI = _Wrapper(
    flags="v",
    takes="nNHcx",
    flags_long=("--oversubscribe", "--allow-run-as-root", "--report-bindings", "--tag-output"),
    takes_long=_opts(
        "np n hostfile machinefile map-by bind-to rank-by npernode ppn host H x wdir f genvlist",
        dashes=("-", "--"),
    ),
    takes2=_opts("mca gmca genv", dashes=("-", "--")),
)
#: commands that run a command given in their arguments
_WRAPPERS: dict[str, _Wrapper] = {
    "env": _Wrapper(
        flags="i0v",
        takes="uCP",
        code="S",
        flags_long=("--ignore-environment", "--null", "--debug"),
        takes_long=("--unset", "--chdir"),
        code_long=("--split-string",),
        assigns=True,
    ),
    "exec": _Wrapper(flags="cl", takes="a"),
    "systemd-run": _Wrapper(
        flags="qGdPStW",
        takes="pEuMH",
        flags_long=_opts(
            "user system scope wait pipe pty quiet collect same-dir no-block "
            "no-ask-password remain-after-exit send-sighup"
        ),
        takes_long=_opts(
            "property unit setenv machine host uid gid nice working-directory "
            "description slice service-type on-active on-calendar timer-property"
        ),
    ),
    "command": _Wrapper(flags="pvV"),
    "builtin": _Wrapper(),
    "time": _Wrapper(
        flags="pavq",
        takes="fo",
        flags_long=("--append", "--verbose", "--portability", "--quiet"),
        takes_long=("--format", "--output"),
    ),
    "nice": _Wrapper(flags="0123456789", takes="n", takes_long=("--adjustment",)),
    "nohup": _Wrapper(),
    "timeout": _Wrapper(
        flags="v",
        takes="sk",
        flags_long=("--preserve-status", "--foreground", "--verbose"),
        takes_long=("--signal", "--kill-after"),
        lead=1,
    ),
    "stdbuf": _Wrapper(takes="ioe", takes_long=("--input", "--output", "--error")),
    "taskset": _Wrapper(flags="acp", lead=1),
    "numactl": _Wrapper(
        flags="lHs",
        takes="NmCpi",
        takes_long=(
            "--interleave",
            "--preferred",
            "--membind",
            "--cpunodebind",
            "--physcpubind",
        ),
    ),
    "srun": _SLURM_WRAPPER,
    "salloc": replace(_SLURM_WRAPPER, bare=True),
    **dict.fromkeys(("mpirun", "mpiexec", "orterun"), _MPI),
    # runuser -u USER [--] COMMAND (runuser USER -c COMMAND is a program: see _DASH_C)
    "runuser": _Wrapper(flags="lmpfPh", takes="ugGsw", code="c", code_long=("--command",)),
    "sudo": _Wrapper(flags="AbEeHiKklnPSsVv", takes="ugpCDhrtTU"),
    "xargs": _Wrapper(
        flags="0prtxilo",
        takes="IaEdLnPs",
        flags_long=(
            "--null",
            "--no-run-if-empty",
            "--interactive",
            "--verbose",
            "--exit",
            "--open-tty",
            "--replace",
            "--show-limits",
            "--help",
            "--version",
        ),
        takes_long=(
            "--arg-file",
            "--delimiter",
            "--max-args",
            "--max-procs",
            "--max-chars",
            "--max-lines",
            "--process-slot-var",
            "--eof",
        ),
    ),
    **dict.fromkeys(("singularity", "apptainer"), replace(_CONTAINER, subs=("exec", "shell"))),
    **dict.fromkeys(("docker", "podman"), _DOCKER),
    **dict.fromkeys(
        ("conda", "mamba", "micromamba"),
        _Wrapper(
            takes="np",
            flags="v",
            takes_long=("--name", "--prefix", "--cwd"),
            flags_long=("--no-capture-output", "--live-stream"),
            subs=("run",),
        ),
    ),
    **dict.fromkeys(("uv", "poetry", "pipenv", "pixi"), _Wrapper(subs=("run",))),
    **dict.fromkeys(
        ("setsid", "unbuffer", "fakeroot", "eatmydata", "catchsegv"), _Wrapper(flags="fwc")
    ),
    "ionice": _Wrapper(flags="t", takes="cnp"),
    "chrt": _Wrapper(flags="abdefimoprRv", lead=1),
    "chroot": _Wrapper(lead=1),
    **dict.fromkeys(
        ("strace", "ltrace"), _Wrapper(flags="cfCFhiqrtTvVwxyz", takes="abeEIoOpPsSuU")
    ),
    "valgrind": _Wrapper(flags="qv"),
    "perf": _Wrapper(flags="adv", takes="eoprCGIt", subs=("stat", "record", "trace")),
    "flock": _Wrapper(flags="sxunoFhV", takes="wE", code="c", code_long=("--command",), lead=1),
    # limits, privileges, namespaces and sandboxes (found by review: `prlimit ... -- tar`)
    "prlimit": _Wrapper(flags="v", takes="p", flags_long=("--verbose", "--raw", "--noheadings")),
    "setpriv": _Wrapper(
        flags="d",
        flags_long=_opts("clear-groups keep-groups init-groups nnp no-new-privs reset-env"),
    ),
    **dict.fromkeys(
        ("unshare", "nsenter"),
        _Wrapper(
            flags="mpuinUCTrcfaF",
            takes="tSGw",
            flags_long=_opts("fork mount-proc map-root-user map-current-user kill-child"),
            takes_long=_opts("target setuid setgid wd root propagation"),
        ),
    ),
    "firejail": _Wrapper(flags_long=_opts("quiet noprofile private")),
    "bwrap": _Wrapper(
        flags_long=_opts(
            "unshare-all unshare-user unshare-net unshare-pid unshare-ipc unshare-uts "
            "unshare-cgroup share-net die-with-parent new-session as-pid-1 clearenv"
        ),
        takes_long=_opts(
            "dev proc tmpfs mqueue dir chdir unsetenv uid gid hostname remount-ro "
            "seccomp file lock-file sync-fd info-fd cap-add cap-drop perms size"
        ),
        takes2=_opts(
            "bind ro-bind dev-bind bind-try ro-bind-try dev-bind-try symlink setenv chmod "
            "bind-data ro-bind-data"
        ),
    ),
    "cgexec": _Wrapper(takes="g", flags_long=("--sticky",)),
    **dict.fromkeys(("doas", "pkexec"), _Wrapper(flags="ns", takes="uC", takes_long=("--user",))),
    "xvfb-run": _Wrapper(flags="a", takes="nsfe", flags_long=("--auto-servernum",)),
    # hwloc-bind LOCATION... [--] COMMAND: its locations before the command
    "hwloc-bind": _Wrapper(flags="v", flags_long=_opts("cpubind membind single strict"), lead=1),
    # setarch ARCH [options] COMMAND (linux32/linux64 take no ARCH)
    "setarch": _Wrapper(flags="vRFLXBIST3", lead=1, flags_long=_opts("addr-no-randomize")),
    **dict.fromkeys(("linux32", "linux64"), _Wrapper(flags="vRFLXBIST3")),
    **dict.fromkeys(("likwid-pin", "likwid-perfctr"), _Wrapper(flags="qmV", takes="cCgsMo")),
    "ccache": _Wrapper(),
    "nsys": _Wrapper(takes="otsfc", subs=("profile",)),
    "ncu": _Wrapper(takes="ok"),
}
#: programs that expand ``$(shell ...)`` in variables given as arguments or inherited
_MAKES = frozenset({"make", "gmake", "bmake"})
#: make's options whose argument is the next word (data: a folder, a file, a number)
_MAKE_TAKES = frozenset({"-C", "-f", "-I", "-j", "-l", "-o", "-W", "--directory", "--file"})
#: find's actions that run a command (up to `;` or `+`)
_FIND_EXEC = frozenset({"-exec", "-execdir", "-ok", "-okdir"})
#: GNU parallel's options with an argument; the words of its command are joined and run
#: by a shell (unless ``-q``/``--quote``)
_PARALLEL_TAKES = "jSaIdEnNLsPC"
_PARALLEL_TAKES_LONG = _opts(
    "jobs sshlogin sshloginfile arg-file colsep delimiter halt joblog results tmpdir "
    "env delay timeout retries workdir nice memfree load block header basefile "
    "return transfer-file max-args max-replace-args"
)
_PARALLEL_SEPARATORS = frozenset({":::", "::::", ":::+", "::::+"})


def _base(word: str) -> str:
    """The name a command word runs (``/usr/bin/python3``: ``python3``, ``${python}``:
    ``python``)."""
    base = word.rsplit("/", 1)[-1]
    match = _VARIABLE_WORD.fullmatch(base)
    return match.group(1) if match else base


def _program(word: str) -> _Program | None:
    base = _base(word)
    if base in _PROGRAMS:
        return _PROGRAMS[base]
    match = _VERSIONED.fullmatch(base)
    if match is None:
        return None
    return {
        "python": _PYTHON,
        "pypy": _PYTHON,
        "perl": _PERL,
        "ruby": _RUBY,
        "lua": _PROGRAMS["lua"],
        "tclsh": _PROGRAMS["tclsh"],
    }.get(match.group(1), _Program(code="r", stdin=True))


def _is_command(word: str) -> bool:
    """Whether ``word`` names a program or a wrapper this module knows."""
    base = _base(word)
    return base in _WRAPPERS or base in _MAKES or base == "parallel" or _program(word) is not None


def _arguments(prog: _Program, args: list[str]) -> tuple[list[tuple[int, Ctx]], bool]:
    """(index, context) of the arguments ``args`` of ``prog`` that are program text or
    names, and whether it reads its program from standard input."""
    places: list[tuple[int, Ctx]] = []
    given = deferred = stdin_opt = False
    from_stdin = False  # a program's file given as standard input: awk -f -
    positional: list[int] = []
    i = 0
    while i < len(args):
        word = args[i]
        if word == "--":
            i += 1
            break
        if word.startswith("--") or (prog.dash_long and word.startswith("-") and len(word) > 1):
            key, eq, _ = word.partition("=")
            at = i if eq else i + 1
            if key in prog.code_long:
                places.append((at, Ctx.CODE))
                given = True
            elif key in prog.files_long:
                given = True
                places.extend(_script_file(args, at))
                from_stdin = from_stdin or _stdin_file(word, eq, args, at)
            i += 1 + (not eq and key in prog.code_long + prog.takes_long + prog.files_long)
            i += 2 * (key in prog.takes2_long)
            continue
        if len(word) < 2 or word[0] not in "-+":
            if not prog.permute:
                break  # the first positional argument
            positional.append(i)
            i += 1
            continue
        skip, ends = 0, False
        for j, letter in enumerate(word[1:], start=2):
            with_arg = prog.code + prog.names + prog.takes + prog.files
            if letter in prog.deferred:
                deferred = True
            if letter in prog.stdin_opts:
                stdin_opt = True
            if letter in with_arg:
                at = i if j < len(word) else i + 1
                if letter in prog.code:
                    places.append((at, Ctx.CODE))
                elif letter in prog.names:
                    places.append((at, Ctx.NAME))
                elif letter in prog.files:
                    places.extend(_script_file(args, at) if j == len(word) else ())
                    from_stdin = from_stdin or (
                        (word[j:] if j < len(word) else args[at] if at < len(args) else "")
                        in _STDIN_FILES
                    )
                given = given or letter in prog.code + prog.files
                skip = int(j == len(word))
                ends = letter in prog.ends
                break
            if letter in prog.ends:  # python -m module: the rest is data
                given = ends = True
                break
        i += 1 + skip
        if ends:
            return places, from_stdin
    rest = positional + list(range(i, len(args)))
    if deferred:
        places.extend((k, Ctx.CODE) for k in rest[:1])
        return places, stdin_opt or from_stdin
    kind = prog.positionals
    if kind == "first" and not given:
        places.extend((k, Ctx.CODE) for k in rest[:1])
    elif kind == "rest":
        places.extend((k, Ctx.CODE) for k in rest[1:])
        return places, from_stdin or (prog.stdin and not given and len(rest) <= 1)
    elif kind == "all":
        places.extend((k, Ctx.CODE) for k in rest)
    elif kind == "names":
        places.extend((k, Ctx.NAME) for k in rest)
    stdin = prog.stdin and not given and (stdin_opt or not rest or not prog.script)
    if prog.script and not (given or kind or stdin_opt) and rest:
        script = _script_file(args, rest[0])
        places.extend(script)
        stdin = stdin or (not script and args[rest[0]] in _STDIN_FILES)
    return places, stdin or from_stdin


def _stdin_file(word: str, eq: str, args: list[str], at: int) -> bool:
    """Whether the long option ``word`` (``--file=-``, ``--file -``) gives standard
    input as the program's file."""
    given = word.partition("=")[2] if eq else (args[at] if at < len(args) else "")
    return given in _STDIN_FILES


def _script_file(args: list[str], at: int) -> list[tuple[int, Ctx]]:
    """A program's file given as ``args[at]``: a process substitution there
    (``bash <(...)``) is program text (the output of its commands)."""
    return [(at, Ctx.CODE)] if at < len(args) and args[at].startswith("<(") else []


class _Unwrapped(NamedTuple):
    """What the wrappers at the start of a command do: the index of the command they run
    (None: none), their names, whether they run a shell reading standard input when given
    no command (``bare``), and the text ``xargs`` replaces in the command by its input
    lines (``replace``: ``-I R``, ``-i``, ``--replace``), if any."""

    at: int | None
    chain: list[str]
    bare: bool = False
    replace: str = ""


def _unwrap(words: list[str], places: list[tuple[int, Ctx, str]]) -> _Unwrapped:
    """Skip the wrappers at the start of ``words`` (``env A=1 srun -n 2 python3``).
    Program text given in a wrapper's options (``env -S``, ``sbatch --wrap``) goes to
    ``places``. An option this module does not know may take the next word as its
    argument, unless that word names a program or a wrapper: then it is the command."""
    k, chain, replace = 0, [], ""
    while k < len(words) and _base(words[k]) in _WRAPPERS:
        name = _base(words[k])
        if name == "runuser" and not any(w in ("-u", "--user") for w in words[k + 1 :]):
            break
        wrapper = _WRAPPERS[name]
        chain.append(name)
        k += 1
        if wrapper.subs:
            if k >= len(words) or words[k] not in wrapper.subs:
                return _Unwrapped(None, chain)
            chain[-1] += " " + words[k]
            if words[k] == "shell":
                return _Unwrapped(None, chain, bare=True)
            k += 1
        lead, unsure = wrapper.lead, False
        while k < len(words):
            word = words[k]
            if word == "--":
                k += 1 + lead
                break
            if word[:1] != "-" or word == "-":
                if (word == "-" and name == "env") or (wrapper.assigns and _ASSIGNMENT.match(word)):
                    k += 1
                elif lead and not (unsure and _is_command(word)):
                    lead -= 1
                    k += 1
                else:
                    break
                continue
            key, eq, value = word.partition("=")
            if name == "xargs" and word.startswith(("-I", "-i", "--replace")):
                # the text its input lines replace: -I R (or -IR), -i[R], --replace[=R]
                given = value if key == "--replace" else word[2:]
                given = given or (words[k + 1] if word == "-I" and k + 1 < len(words) else "")
                replace = given or "{}"
            if key in wrapper.code_long:
                places.append((k if eq else k + 1, Ctx.CODE, f"{name} {key}"))
            if (
                word.startswith("--")
                or key in wrapper.flags_long + wrapper.takes_long + wrapper.takes2
            ):
                if eq or key in wrapper.flags_long:
                    k += 1
                elif key in wrapper.takes_long + wrapper.code_long:
                    k += 2
                elif key in wrapper.takes2:
                    k += 3
                else:
                    k, unsure = _unknown_option(words, k), True
                continue
            for j, letter in enumerate(word[1:], start=2):
                if letter in wrapper.takes or letter in wrapper.code:
                    if letter in wrapper.code:
                        at = k if j < len(word) else k + 1
                        places.append((at, Ctx.CODE, f"{name} -{letter}"))
                    k += 1 + (j == len(word))
                    break
                if letter not in wrapper.flags:
                    k, unsure = _unknown_option(words, k), True
                    break
            else:
                k += 1
        if k >= len(words):
            return _Unwrapped(None, chain, bare=wrapper.bare)
    return _Unwrapped(k if k < len(words) else None, chain, replace=replace)


def _unknown_option(words: list[str], k: int) -> int:
    """Past the option ``words[k]`` this module does not know: its argument may be the
    next word, unless that word is an option or names a command (then it is not)."""
    nxt = words[k + 1] if k + 1 < len(words) else "-"
    if "=" in words[k] or nxt[:1] == "-" or _is_command(nxt):
        return k + 1
    return k + 2


def _parallel(words: list[str], k: int) -> tuple[list[tuple[int, Ctx]], bool]:
    """GNU ``parallel`` at ``words[k]``: its command's words are joined and run by a
    shell (program text, unless ``-q``); with no command, its arguments (after
    ``:::``) or its input lines are the commands. Whether it reads commands from its
    standard input."""
    i, quote, n = k + 1, False, len(words)
    while i < n and words[i][:1] == "-" and not words[i].startswith(":::"):
        word = words[i]
        quote = quote or word in ("-q", "--quote")
        if word.startswith("--"):
            i += 1 + ("=" not in word and word in _PARALLEL_TAKES_LONG)
        else:
            i += 1 + (len(word) == 2 and word[1] in _PARALLEL_TAKES)
    command = []
    while i < n and words[i] not in _PARALLEL_SEPARATORS:
        command.append(i)
        i += 1
    if command:
        return ([] if quote else [(j, Ctx.CODE) for j in command]), False
    inputs = [j for j in range(i, n) if words[j] not in _PARALLEL_SEPARATORS]
    return [(j, Ctx.CODE) for j in inputs], i >= n


def _trap_action(words: list[str]) -> int | None:
    """Which of ``words`` (a simple command's, without quotes) is the action of a
    ``trap`` (after ``builtin`` or ``command`` and their options, and ``--``), if the
    command is one that sets an action: bash reads it as shell when the signal comes."""
    k = 0
    while k < len(words) and words[k] in ("builtin", "command"):
        k += 1
        while k < len(words) and words[k].startswith("-") and len(words[k]) > 1:
            k += 1
            if words[k - 1] == "--":
                break
    if k >= len(words) or words[k] != "trap":
        return None
    k += 1
    if k < len(words) and words[k] == "--":
        k += 1
    elif k < len(words) and words[k].startswith("-"):
        return None  # trap -p, trap -l: print; trap - INT: reset
    return k if k < len(words) else None


def command_places(
    words: list[str], raw: list[str]
) -> tuple[list[tuple[int, Ctx, str]], tuple[Ctx, str] | None, bool]:
    """What a simple command does with its words (``words``: without quotes, the
    command's name first; ``raw``: as written): (index, context) of the words that are
    program text (:attr:`Ctx.CODE`), variable names (:attr:`Ctx.NAME`) or evaluated as
    arithmetic (:attr:`Ctx.ARITH`: a value for a variable of :data:`SPECIAL_INTEGERS`),
    with the command that reads them (for messages); the context of what the command
    reads from standard input, if any (with its command): :attr:`Ctx.CODE` when it reads
    a program there (``python3 - <<EOF``, ``... | bash``), :attr:`Ctx.ARITH` when it
    reads a special integer variable (``read RANDOM``); and whether the assignments
    before it are program text (``make`` expands ``$(shell ...)`` in its environment)."""
    places: list[tuple[int, Ctx, str]] = []
    stdin: tuple[Ctx, str] | None = None
    name, args = words[0], words[1:]
    if name not in _KEYWORDS:
        # the program that runs: a value there chooses it (`eval`, a shell, any file),
        # and the words after it are then that program's (found by review: `run() {
        # "$@"; }; run $[[s]] ...`, see codeflow)
        places.append((0, Ctx.CODE, COMMAND_NAME))
    shifted: list[tuple[int, Ctx]] = []
    if name in _BUILTINS:
        found, reads = _arguments(_BUILTINS[name], args)
        shifted = [(k + 1, ctx) for k, ctx in found]
        if reads:
            stdin = (Ctx.CODE, f"{name} (its commands read from standard input)")
    elif name in _DECLARES:
        nameref, options = False, True
        for k, word in enumerate(args, start=1):
            options = options and word[:1] in "-+" and len(word) > 1 and "=" not in word
            if options:
                nameref = nameref or (word[0] == "-" and "n" in word)
                continue
            assignment = _ASSIGNMENT.match(raw[k])
            if assignment is None:
                shifted.append((k, Ctx.NAME))  # a name given by a value: bash evaluates
            elif nameref:
                shifted.append((k, Ctx.NAME))
            target = _NAME.match(word)
            if assignment and target and target.group(0) in SPECIAL_INTEGERS:
                places.append((k, Ctx.ARITH, f"{name} {target.group(0)}="))
    elif name in ("test", "["):
        shifted = [(k + 2, Ctx.NAME) for k, w in enumerate(args[:-1]) if w in ("-v", "-R")]
    elif name in ("for", "select") and args and args[0] in SPECIAL_INTEGERS:
        places.extend((k, Ctx.ARITH, f"{name} {args[0]}") for k in range(1, len(words)))
    elif name == "getopts" and len(args) > 1 and args[1] in SPECIAL_INTEGERS:
        places.extend((k, Ctx.ARITH, f"{name} {args[1]}") for k in range(1, len(words)))
    for k, ctx in shifted:
        if ctx is Ctx.NAME and k < len(words) and words[k] in SPECIAL_INTEGERS:
            what = f"{name} {words[k]}"  # read RANDOM, printf -v OPTIND: the value read
            places.extend((j, Ctx.ARITH, what) for j in range(k, len(words)))
            stdin = (Ctx.ARITH, what)
    places.extend((k, ctx, name) for k, ctx in shifted)
    if name in _BUILTINS or name in _DECLARES:
        return [p for p in places if p[0] < len(words)], stdin, False
    if _base(name) == "find":
        # find ... -exec CMD ... ; : each command of -exec/-execdir/-ok/-okdir is a
        # command of its own (found by review: `find -exec sh -c "...$x..."` ran it)
        for at, word in enumerate(words):
            if word in _FIND_EXEC and at + 1 < len(words):
                end = next(
                    (j for j in range(at + 1, len(words)) if words[j] in (";", "+")),
                    len(words),
                )
                inner, _, _ = command_places(words[at + 1 : end], raw[at + 1 : end])
                places.extend(
                    (at + 1 + j, ctx, what if what == COMMAND_NAME else f"find {word} {what}")
                    for j, ctx, what in inner
                )
        return [p for p in places if p[0] < len(words)], stdin, False
    run = _unwrap(words, places)
    env_code = False
    if run.at is None:
        if run.bare:
            stdin = (Ctx.CODE, f"{run.chain[-1]} (a shell reading standard input)")
        return [p for p in places if p[0] < len(words)], stdin, False
    k = run.at
    if k:
        places.append((k, Ctx.CODE, COMMAND_NAME))  # the command a wrapper runs
    base = _base(words[k])
    prog = _program(words[k])
    if prog is not None:
        found, reads = _arguments(prog, words[k + 1 :])
        places.extend((k + 1 + n, ctx, base) for n, ctx in found)
        inline = _inline_data(prog, words[k + 1 :]) if prog is _SHELL else None
        if inline is not None and inline[1] >= 0:  # bash -c CODE NAME ARG...
            first = k + 1 + inline[0]
            code = words[k + 1 + inline[1]]
            places.extend(
                (first + n, ctx, f"{base} -c ({what})" if what else f"{base} -c")
                for n, ctx, what in _inline_places(code, len(words) - first)
            )
        if reads:
            stdin = (Ctx.CODE, f"{base} (its program read from standard input)")
        elif prog is _SSH and found:  # ssh host python3 -: the remote command's input
            remote = " ".join(words[k + 1 + found[0][0] :]).split()
            _, remote_stdin, _ = command_places(remote, remote) if remote else ([], None, False)
            if remote_stdin is not None and remote_stdin[0] is Ctx.CODE:
                stdin = (Ctx.CODE, f"{base} {remote_stdin[1]}")
    elif base in _MAKES:
        what = f"{base} (it expands $(shell ...) in a variable's value)"
        places.extend(
            (j, Ctx.CODE, what)
            for j in range(1, len(words))
            if j != k and _ASSIGNMENT.match(raw[j])
        )
        # any other argument but an option's own: a value with `=` in it is an
        # assignment too, one starting with `-` an option (`--eval=...`), whatever the
        # template meant (found by review: `make "$x"`)
        j = k + 1
        while j < len(words):
            if words[j] in _MAKE_TAKES:
                j += 2
                continue
            if not words[j].startswith("-") or raw[j] != words[j]:
                places.append((j, Ctx.CODE, what))
            j += 1
        env_code = True
    elif base == "parallel":
        found, reads = _parallel(words, k)
        places.extend((j, ctx, base) for j, ctx in found)
        if reads:
            stdin = (Ctx.CODE, f"{base} (its commands read from standard input)")
    if run.replace and any(
        ctx is Ctx.CODE and j > k and run.replace in words[j] for j, ctx, _ in places
    ):
        stdin = (Ctx.CODE, "xargs (its input lines replace text in program text)")
    return [p for p in places if p[0] < len(words)], stdin, env_code


#: words that are the shell's own syntax at a command's start (as written: ``/usr/bin/time``
#: is a program, and a wrapper)
_KEYWORDS = frozenset(
    {"for", "select", "case", "in", "function", "if", "then", "elif", "else", "fi"}
    | {"while", "until", "do", "done", "esac", "{", "}", "!", "coproc", "time"}
)
#: commands that read no option worth a value's refusal (``test``/``[``: its operands
#: only change a truth value; ``:``, ``true``, ``false`` ignore their arguments)
_NO_OPTIONS = frozenset({":", "true", "false", "test", "["})
#: bash's builtins: their options end at their first word that is not one (getopt
#: without permutation); ``echo`` reads only words made of ``-n``, ``-e``, ``-E``
_SHELL_BUILTINS = frozenset(
    {"alias", "bg", "bind", "break", "builtin", "caller", "cd", "command", "compgen"}
    | {"complete", "compopt", "continue", "declare", "dirs", "disown", "echo", "enable"}
    | {"eval", "exec", "exit", "export", "fc", "fg", "getopts", "hash", "help", "history"}
    | {"jobs", "kill", "let", "local", "logout", "mapfile", "popd", "printf", "pushd"}
    | {"pwd", "read", "readarray", "readonly", "return", "set", "shift", "shopt", "source"}
    | {".", "suspend", "times", "trap", "type", "typeset", "ulimit", "umask", "unalias"}
    | {"unset", "wait"}
)
#: the words echo reads as its options (any other word, ``--`` too, is printed)
ECHO_OPTION = re.compile(r"-[neE]+")
#: programs that take a word beginning with ``-`` for an option even after ``--``: find
#: reads its starting points up to the first word that begins with ``-``, ``(`` or ``!``
_DASHES_ANYWHERE = frozenset({"find", "gfind"})
#: a positional parameter at the start of a word of a shell's inline program: ``$1``,
#: ``${2}``, ``$@``, ``$*`` (which of the shell's data words it is)
_POSITIONAL = re.compile(r"\$(?:\{([0-9]+|[@*])(?=[:}])|([0-9@*]))")


def _inline_data(prog: _Program | None, args: list[str]) -> tuple[int, int] | None:
    """For Python given its program inline (``-c CODE``) or on standard input (``python3
    -``), or a shell given ``-c CODE``: (where in ``args``, its arguments, the program's
    data begins, the index of its inline program or -1). Every word from there is
    ``sys.argv`` or ``$0``, ``$1``..., handed to the template's own code, never an option
    of the interpreter's (a shell's inline program is read for where it uses them:
    :func:`_inline_options`). None for a script file or a module (``-m``: it reads
    options of its own, as argparse does), a shell reading standard input with ``-s``
    (its options go on after its first operand: ``bash -s -c CODE`` runs CODE) unless a
    ``--`` ends them, and any other program."""
    i = 0
    if prog is _PYTHON:
        while i < len(args):
            word = args[i]
            if word == "-":
                return i + 1, -1
            if word[:1] != "-":
                return None  # the script's file
            if word.startswith("--"):
                i += 1
                continue
            for j, letter in enumerate(word[1:], start=2):
                if letter == "m":
                    return None  # a module: it reads its arguments as a script does
                if letter == "c":  # -c CODE, -cCODE
                    return (i + 1, -1) if j < len(word) else (i + 2, i + 1)
                if letter in "WXQ":
                    i += j == len(word)
                    break
            i += 1
        return None
    if prog is _SHELL:
        inline = ended = False
        while i < len(args):
            word = args[i]
            if word in ("-", "--"):
                i, ended = i + 1, True
                break
            if len(word) < 2 or word[0] not in "-+":
                break
            if word.startswith("--"):
                i += 1 + (word in _SHELL.takes_long)
                continue
            inline = inline or "c" in word[1:]
            i += 1 + (word[-1] in "oO")
        if inline:
            return i + 1, i  # bash -c CODE NAME ARG...: $0 and on
        return (i, -1) if ended else None
    return None


def _script_at(prog: _Program | None, args: list[str]) -> int | None:
    """Where in ``args`` Python's or a shell's script file is (its arguments after it are
    the script's to read), if given."""
    if prog is not _PYTHON and prog is not _SHELL:
        return None
    takes = "WXQ" if prog is _PYTHON else "oO"
    i = 0
    while i < len(args):
        word = args[i]
        if word == "--":
            return i + 1 if i + 1 < len(args) else None
        if word[:1] != "-":
            return i
        if word == "-":
            return None
        i += 2 if len(word) == 2 and word[1] in takes else 1
    return None


def _positionals(which: str, count: int, *, whole_from: int = 1) -> range | list[int]:
    """The data words (``$0`` is 0, ``count`` of them) a positional parameter stands for:
    ``$@``/``$*`` all from ``whole_from`` on (``"m$@"``: its second and later are whole
    words), ``$N`` the N-th."""
    if which in ("@", "*"):
        return range(whole_from, count)
    n = int(which)
    return [n] if n < count else []


def _inline_options(code: str, first: int, count: int) -> list[tuple[int, str, bool]]:
    """The data words of a shell's inline program ``code`` (``$0`` at ``first``, ``count``
    of them) that it puts where a command of its own reads options (``bash -c 'tar -xf a
    "$1"' _ X``), each with that command, and whether the word is split there (an
    unquoted ``$1``: each of its words may be an option)."""
    out: list[tuple[int, str, bool]] = []
    lexed = scan(code)
    for start, end, command in lexed.options:
        for match in _POSITIONAL.finditer(code, start, end):
            which = match.group(1) or match.group(2)
            split = lexed.quoting[match.start()] is Ctx.UNQUOTED
            at_start = not code[start : match.start()].strip("\"'")
            whole_from = 1 if at_start else 2
            for n in _positionals(which, count, whole_from=whole_from):
                if at_start or split or which in ("@", "*"):
                    out.append((first + n, command, split))
    return out


def _inline_places(code: str, count: int) -> list[tuple[int, Ctx, str]]:
    """The data words of a shell's inline program ``code`` (``count`` of them, ``$0``
    first) that it puts in program text, arithmetic or a variable's name of its own
    (``bash -c '[[ $1 -gt 0 ]]' _ X``: a subscript in X runs a command), with the
    context and the command that reads them (found by review)."""
    lexed = scan(code)
    out: list[tuple[int, Ctx, str]] = []
    for match in _POSITIONAL.finditer(code):
        ctx = lexed.contexts[match.start()]
        if ctx not in (Ctx.ARITH, Ctx.CODE, Ctx.NAME):
            continue
        what = lexed.command_at(match.start()) or ("arithmetic" if ctx is Ctx.ARITH else "")
        for n in _positionals(match.group(1) or match.group(2), count):
            out.append((n, ctx, what))
    return out


def split_option_words(words: list[str]) -> list[tuple[int, str]]:
    """The data words of a shell's inline program (``bash -c CODE NAME ARG...``, after
    wrappers too) that CODE splits into words where a command of its own reads options
    (an unquoted ``$1``): any of their words beginning with ``-`` is an option."""
    run = _unwrap(words, []) if _base(words[0]) in _WRAPPERS else _Unwrapped(0, [])
    if run.at is None or _program(words[run.at]) is not _SHELL:
        return []
    at = run.at
    inline = _inline_data(_SHELL, words[at + 1 :])
    if inline is None or inline[1] < 0:
        return []
    first = at + 1 + inline[0]
    code = words[at + 1 + inline[1]]
    found = _inline_options(code, first, len(words) - first)
    return [(j, what) for j, what, split in found if split]


def xargs_feeds(words: list[str]) -> str | None:
    """When a simple command is ``xargs`` (after wrappers too): the command it runs, if
    that command may read the words of xargs's input as its options, at the end of its
    arguments or at each ``-I R`` (found by review: ``echo $x | xargs tar -xf a.tar``
    passed ``--to-command=...``); None otherwise (``xargs tar -xf a.tar --``)."""
    if _base(words[0]) not in _WRAPPERS:
        return None
    run = _unwrap(words, [])
    if "xargs" not in run.chain or run.at is None:
        return None  # xargs's own echo prints them
    command = words[run.at :]
    if run.replace:
        hits = [what for k, what in option_words(command) if command[k].startswith(run.replace)]
        return hits[0] if hits else None
    last = [what for k, what in option_words([*command, "\x02"]) if k == len(command)]
    return last[0] if last else None


def option_words(words: list[str]) -> list[tuple[int, str]]:
    """The words of a simple command (``words``: without quotes, its name first) that it
    may read as options, each with the command that reads it: a value beginning with
    ``-`` there is an option of the program's, not data (``tar -xf a.tar $x`` with
    ``--to-command=sh ...``, ``ssh $host`` with ``-oProxyCommand=...``, ``find $dir``
    with ``-delete``, ``printf $x`` with ``-v PATH``). A program other than a builtin
    reads options anywhere before a ``--`` word (GNU getopt permutes; find even after
    it); a builtin only before its first word that is not an option; a wrapper's words
    (``srun``, ``timeout``...) before its command are its own options' or arguments; the
    words after an inline program (``python3 -c CODE``, ``python3 -``, ``bash -c CODE
    NAME``) are that program's data, but where the shell's inline program puts them
    (``"$1"``, ``"$@"``) as a command's options."""
    name = _base(words[0])
    if words[0] in _KEYWORDS or (name in _NO_OPTIONS and name not in _WRAPPERS):
        return []
    out: list[tuple[int, str]] = []
    run = _unwrap(words, []) if name in _WRAPPERS else _Unwrapped(0, [])
    at = len(words) if run.at is None else run.at
    # the command's own word too: a value there that begins with '-' is the wrapper's
    # option (`srun "$x" prog`), a program's name never does
    out.extend((j, name) for j in range(1, min(at + 1, len(words))) if words[j] != "--")
    if at >= len(words):
        return out
    program = _base(words[at])
    if program in _NO_OPTIONS:
        return out
    builtin, after_option = program in _SHELL_BUILTINS, False
    inline = _inline_data(_program(words[at]), words[at + 1 :])
    end = len(words) if inline is None else at + 1 + inline[0]
    if inline is not None and inline[1] >= 0 and _program(words[at]) is _SHELL:
        first = at + 1 + inline[0]
        code = words[at + 1 + inline[1]]
        out.extend((j, what) for j, what, _ in _inline_options(code, first, len(words) - first))
    script = _script_at(_program(words[at]), words[at + 1 :]) if inline is None else None
    for j in range(at + 1, end):
        word = words[j]
        if script is not None and j == at + 2 + script:
            program = f"{program} {_base(words[j - 1])}"  # python3 score.py: its parser's
        if word == "--" and program != "echo" and program not in _DASHES_ANYWHERE:
            if j + 1 < len(words) and _is_command(words[j + 1]):
                # an unknown wrapper's command after its `--` (prlimit ... -- tar ...)
                out.extend((j + 1 + k, what) for k, what in option_words(words[j + 1 :]))
            break
        out.append((j, program))
        option = ECHO_OPTION.fullmatch(word) if program == "echo" else word.startswith("-")
        if builtin and not option and not after_option:
            break  # a builtin's first operand: its options end there
        # the word after an option may be its argument (`printf -v name FORMAT`): the
        # options go on after it (echo's take none)
        after_option = bool(option) and program != "echo"
    return out


@dataclass
class _Heredoc:
    delimiter: str
    strip_tabs: bool  # <<-
    literal: bool  # the delimiter was quoted: no expansion in the body
    ctx: tuple[Ctx, str] | None = None  # the body is program text or arithmetic: for what
    body: tuple[int, int] | None = None  # where its body is, once read
    feeds: str | None = None  # the body's words become this command's arguments (xargs)
    reads: bool = False  # ``read`` or ``mapfile`` (or a loop around one) reads the body


class _NamedCommand(NamedTuple):
    """A command whose name is variable ``name``'s expansion: how its value is read
    (``all``: an array's elements, ``split``: unquoted, split into words; else one
    word), the command's words' ranges, and what it reads on standard input: the
    ranges of the commands before it in its pipeline and of its here-strings and
    ``< <(...)`` (``inputs``), and its here-documents (their bodies read by ``run``)."""

    name: str
    how: str
    cmd: list[tuple[int, int]]
    inputs: list[tuple[int, int]]
    docs: list[_Heredoc]


@dataclass
class _Frame:
    """One level of nesting: ``top``, ``cmdsub`` ($(...)), ``backtick``, ``cond``
    ([[ ... ]]), ``arith`` ($((...))), ``arithcmd`` (((...))), ``arithbr`` ($[...]),
    ``subscript`` (name[...]), ``offset`` (${name:...}), ``param`` (an unquoted ${...},
    up to its matching ``}``: a piece of the word it is in), ``double``, ``hdoc`` (an
    expanding here-document's body: like ``double``, but ``"`` is a character there),
    ``single`` or ``ansi`` ($'...')."""

    kind: str
    start: int = 0  # the first character inside the frame
    depth: int = 0  # open parentheses, brackets or braces inside the frame
    # word by word (shell and cond frames)
    word: int | None = None  # where the word being read began
    cmd_pos: bool = True  # the next word may be a command name
    prev: str = ""  # the previous word of the command
    args: str = ""  # 'let', 'declare', 'declare -i': which arguments are arithmetic
    redirect: str = ""  # the next word is a redirection's target: '<', '>' or '<<<'
    piped: bool = False  # a '|' was read and no word since: a newline goes on
    compound: int = 0  # open parentheses of an array assignment name=(...)
    words: list[tuple[int, int]] = field(default_factory=list)  # cond: its words
    param: bool = False  # a subscript of ${name[...]}: an offset may follow
    # the simple command being read (shell frames): where it began, its words from its
    # name on, the assignments before it, its here-documents and the words it reads as
    # standard input (here-strings, '< <(...)'); the pipeline it is in: where it began,
    # the here-documents of its earlier commands
    cmd_start: int | None = None
    cmd: list[tuple[int, int]] = field(default_factory=list)
    assigns: list[tuple[int, int]] = field(default_factory=list)
    docs: list[_Heredoc] = field(default_factory=list)
    inputs: list[tuple[int, int]] = field(default_factory=list)
    pipe_start: int | None = None
    pipe_docs: list[_Heredoc] = field(default_factory=list)
    in_pipe: bool = False  # a '|' was read in the pipeline being read
    bypass: bool = False  # ``command`` or ``builtin`` before the name: no function's
    defining: bool = False  # the name after ``function`` was read: ``()`` may follow
    # the function whose definition was read: the next compound command is its body;
    # the bodies open in this frame: their function, the number of open compound
    # commands with them, and where each begins
    body_of: str = ""
    bodies: list[tuple[str, int, int]] = field(default_factory=list)
    # where ``coproc`` was read, its command not yet begun (the next compound command
    # or simple command is the coprocess), and the coprocesses open in this frame as
    # compound commands: the number of open compound commands with them, and where
    # each ``coproc`` is
    coproc_at: int | None = None
    coprocs: list[tuple[int, int]] = field(default_factory=list)
    # the open compound commands ('(' or a keyword), each with where the pipeline it is
    # in began: a pipe after its end goes on from there
    groups: list[tuple[str, int]] = field(default_factory=list)
    # the array assignments of the command being read: where each ``name=(`` begins,
    # and its elements (words inside the parentheses)
    arrays: list[tuple[int, list[tuple[int, int]]]] = field(default_factory=list)


@dataclass(frozen=True)
class Scan:
    """The result of :func:`scan`: one context per character, the quoting of each
    character regardless of arithmetic (``quoting``: :attr:`Ctx.ARITH` never occurs in
    it), and whether the text ends back at the top level (``problem`` says why not).
    Shared by every caller that scans the same text (:func:`scan` remembers it): never
    changed."""

    contexts: tuple[Ctx, ...]
    quoting: tuple[Ctx, ...]
    problem: str | None = None
    places: tuple[tuple[int, int, Ctx, str], ...] = ()
    #: the words a command may read as options (see :func:`option_words`): where each
    #: is, and the command that reads it
    options: tuple[tuple[int, int, str], ...] = ()
    #: text whose words reach a command that may read them as options, split: what
    #: ``xargs`` reads (:func:`xargs_feeds`), a word a shell's inline program splits
    #: (:func:`split_option_words`); where it is, that command, and how it gets there
    option_inputs: tuple[tuple[int, int, str, str], ...] = ()
    #: the variables the text gives values to, and from which words
    #: (:func:`~flowbatch.render.shellvars.command_flows`)
    flows: tuple[Flow, ...] = ()
    #: where the text of each command substitution (``$(...)``, backticks, ``<(...)``)
    #: begins, and where it ends
    subs: tuple[tuple[int, int], ...] = ()
    #: where the text of each unquoted ``${...}`` begins (after its ``{``), and where its
    #: closing ``}`` is: the lexer's matching, quotes and escapes inside it respected
    params: tuple[tuple[int, int], ...] = ()
    #: the variables a constant eval text reads in a word its command may read as an
    #: option (``eval 'tar -xf a.tar "$m"'``): where the eval's words are, the
    #: command, the variable, and whether it may begin the word (else an unquoted
    #: expansion inside it, whose words after the first may begin one)
    eval_options: tuple[tuple[int, int, str, str, bool], ...] = ()

    def command_at(self, pos: int) -> str | None:
        """The command that reads the character at ``pos`` as a name or program text
        (or as arithmetic, for an assignment to a special integer variable)."""
        ctx = self.contexts[pos]
        for start, end, place_ctx, what in reversed(self.places):
            if start <= pos < end and place_ctx is ctx:
                return what
        return None


_OPEN_NAMES = {
    "cmdsub": "a '$(' without its ')'",
    "arith": "a '$((' without its '))'",
    "arithcmd": "a '((' without its '))'",
    "arithbr": "a '$[' without its ']'",
    "offset": "a '${name:' without its '}'",
    "param": "a '${' without its '}'",
    "cond": "a '[[' without its ']]'",
    "backtick": "a backtick without its closing backtick",
    "double": "a double quote without its closing quote",
    "hdoc": "a here-document",
    "single": "a single quote without its closing quote",
    "ansi": "a $'...' quote without its closing quote",
}


def _unquoted(word: str) -> str:
    """A word without its quote characters (enough to recognise a command name)."""
    return word.replace("'", "").replace('"', "").replace("\\", "")


class _Lexer:
    def __init__(self, text: str, *, heredoc: bool = False) -> None:
        """``heredoc``: ``text`` is the body of an expanding here-document."""
        self.text = text
        self.heredoc = heredoc
        self.ctx = [Ctx.UNQUOTED] * len(text)
        self.stack = [_Frame("top")]
        if heredoc:
            self.stack.append(_Frame("hdoc"))
        self.pending: list[_Heredoc] = []
        self.problem: str | None = None
        self.arith: list[tuple[int, int]] = []  # [start, end) ranges of arithmetic text
        # ranges of names, program text (and arithmetic found by command), with the
        # command that reads them
        self.places: list[tuple[int, int, Ctx, str]] = []
        self.options: list[tuple[int, int, str]] = []
        self.option_inputs: list[tuple[int, int, str, str]] = []
        self.flows: list[Flow] = []
        self.subs: list[tuple[int, int]] = []
        self.params: list[tuple[int, int]] = []
        #: what a loop or group reads as its input (``done <<< $x``, ``} < <(...)``): the
        #: ``read`` and ``mapfile`` inside it read that (see ``with_group_inputs``)
        self.group_inputs: list[tuple[int, int]] = []
        #: the functions the text defines (``f() {``, ``function f``), so far, and each
        #: command that may call one: its name and its arguments' ranges
        self.functions: set[str] = set()
        self.calls: list[tuple[str, tuple[tuple[int, int], ...]]] = []
        #: the words of those calls a program would read as options (see ``run``), and
        #: the variables commands' names expand (``"$@"``, ``$cmd``)
        self.call_options: list[tuple[int, int, str]] = []
        self.named_by: set[str] = set()
        #: the commands whose name is a variable's expansion (``$e "$x"``,
        #: ``"${cmd[@]}" ...``, ``... | $e``): resolved in ``run``, every flow known
        self.by_variable: list[_NamedCommand] = []
        #: the variables an eval's text reads as program text when it runs: each
        #: name, where the eval is, and what reads it (``eval_code``)
        self.eval_reads: list[tuple[str, int, str]] = []
        #: the variables whose values are an eval's (or a trap's) text when expanded:
        #: each name, where the command is, and the command (``held_eval_code``)
        self.held_evals: list[tuple[str, int, str]] = []
        #: what a constant eval text reads as a command's options (``Scan.eval_options``)
        self.eval_options: list[tuple[int, int, str, str, bool]] = []
        #: where each function's body is (its name, its first character, its end)
        self.bodies: list[tuple[str, int, int]] = []
        self.i = 0

    # -- helpers -------------------------------------------------------------------
    def peek(self, offset: int = 1) -> str:
        j = self.i + offset
        return self.text[j] if j < len(self.text) else ""

    def mark(self, start: int, end: int, ctx: Ctx) -> None:
        for k in range(start, min(end, len(self.text))):
            self.ctx[k] = ctx

    def escape(self, ctx: Ctx) -> None:
        """A backslash: it is read in ``ctx``; the next character is escaped."""
        self.ctx[self.i] = ctx
        if self.i + 1 >= len(self.text):
            self.problem = "the command ends with a backslash"
        else:
            self.ctx[self.i + 1] = Ctx.ESCAPED
        self.i += 2

    def push(self, kind: str, *, param: bool = False) -> None:
        """Open a frame whose text starts at ``self.i``."""
        self.stack.append(_Frame(kind, start=self.i, param=param))

    def pop(self, end: int) -> _Frame:
        """Close the top frame, whose text ends before ``end``."""
        frame = self.stack.pop()
        if frame.kind in _ARITH_KINDS:
            self.arith.append((frame.start, end))
        elif frame.kind == "cmdsub":
            self.subs.append((frame.start, end))
        elif frame.kind == "param":
            self.params.append((frame.start, end))
        return frame

    # -- main loop -----------------------------------------------------------------
    def run(self) -> Scan:
        while self.i < len(self.text):
            kind = self.stack[-1].kind
            if kind in _UNQUOTED_KINDS:
                self.step_unquoted(self.stack[-1])
            elif kind in ("double", "hdoc"):
                self.step_double()
            else:
                self.step_single(ansi=kind == "ansi")
        self.finish()
        if len(self.stack) == 2 and self.stack[-1].kind == "hdoc":
            self.stack.pop()  # a here-document's body ends with the text
        if self.problem is None and len(self.stack) > 1:
            self.problem = f"unterminated: {_OPEN_NAMES[self.stack[-1].kind]}"
        if self.problem is None and self.pending:
            self.problem = f"here-document '{self.pending[0].delimiter}' has no body"
        calls: list[tuple[str, tuple[tuple[int, int], ...]]] = []
        sets: list[tuple[tuple[int, int], ...]] = []
        self.flows.extend(self.assigning_expansions())
        if not self.heredoc:
            # the operands of `set`: the positional parameters of the scope it is in
            sets = [flow.sources for flow in self.flows if flow.name == "@" and flow.sources]
            calls = [(name, arguments) for name, arguments in self.calls if name in self.functions]
            # a function's arguments are its positional parameters ("$1", "$@", shift):
            # a call anywhere in the text, before its definition too (a function that
            # calls one defined after it)
            self.flows.extend(
                Flow("@", arguments, split=True)
                for name, arguments in self.calls
                if name in self.functions
            )
            # a command named by them (`run() { echo "+ $*"; "$@"; }`), or by a variable
            # the text gives a value (`cmd=$1; "$cmd" ...`, `a=("$@"); "${a[@]}"`): a
            # call's arguments may be a program's, read as its options there
            assigned = {flow.name for flow in self.flows}
            if any(n[0] in "@*0123456789" or n in assigned for n in self.named_by):
                self.options.extend(self.call_options)
        quoting = tuple(self.ctx)
        flows = with_group_inputs(self.text, self.flows, self.group_inputs)
        for named in self.by_variable:
            self.places.extend(self.named_places(named, flows))
        self.held_eval_code(flows)
        if not self.heredoc and "\x00" in self.text and (flows or calls):
            # program text that reads a variable or a function's arguments: the words
            # they come from are program text too (a text with no value in it, or no
            # variable and no call, has nothing to follow)
            self.places.extend(
                program_sources(
                    self.text,
                    quoting,
                    self.places,
                    flows,
                    calls,
                    sets,
                    self.bodies,
                    self.subs,
                    self.params,
                    self.eval_reads,
                    self.text_reads,
                )
            )
        contexts = list(quoting)
        ranges = [r[:3] for r in self.places if r[2] is not Ctx.ARITH]
        ranges += [r[:3] for r in self.places if r[2] is Ctx.ARITH]
        ranges += [(start, end, Ctx.ARITH) for start, end in self.arith]
        for start, end, ctx in ranges:
            # inside single quotes a name or program text stays SINGLE: refused as such
            over = _OVERRIDDEN if ctx is Ctx.ARITH else _OVERRIDDEN_BY_PLACES
            for k in range(start, min(end, len(contexts))):
                if contexts[k] in over:
                    contexts[k] = ctx
        return Scan(
            tuple(contexts),
            quoting,
            self.problem,
            tuple(self.places),
            tuple(self.options),
            tuple(self.option_inputs),
            tuple(flows),
            tuple(self.subs),
            tuple(self.params),
            tuple(self.eval_options),
        )

    def assigning_expansions(self) -> list[Flow]:
        """The flows of ``${v:=word}`` and ``${v=word}``, quoted or not, wherever bash
        expands them (:func:`~flowbatch.render.shellvars.expansion_flow`)."""
        text, flows = self.text, []
        for found in _ASSIGNING_OPEN.finditer(text):
            k = found.start()
            if self.ctx[k] not in (Ctx.UNQUOTED, Ctx.DOUBLE):
                continue  # quoted by single quotes or a backslash, a comment
            close = _closing(text, self.ctx, k + 2, len(text), "{")
            flow = expansion_flow(text, k + 2, close)
            if flow is not None:
                flows.append(flow)
        return flows

    def finish(self) -> None:
        """At the end of the text: end the word being read (it may be the ``]]`` of a
        conditional, or an argument of ``let``); a subscript without ``]`` ends here."""
        end = len(self.text)
        while True:
            frame = self.stack[-1]
            if frame.kind == "subscript":
                self.pop(end)
            elif frame.word is None or not self.end_word(frame, end):
                if frame.kind in _SHELL_KINDS:
                    self.end_command(frame, end, piped=False)
                return

    def step_unquoted(self, frame: _Frame) -> None:
        text, i, c = self.text, self.i, self.text[self.i]
        self.ctx[i] = Ctx.UNQUOTED
        kind = frame.kind
        if kind in _SHELL_KINDS or kind == "cond":
            if self.read_word(frame, c):
                return  # done, or the frame changed: the new top frame reads on
        elif kind == "subscript" and c == "\n" and not frame.depth:
            self.pop(i)  # not a subscript after all (a glob); the newline is read again
            return
        elif kind == "param" and c in "<>" and self.peek() == "(":
            self.process_substitution()  # bash runs it inside ${...} too: ${x:-<(cmd)}
            return
        if c == "\\":
            self.escape(Ctx.UNQUOTED)
            return
        self.i += 1
        if c == "'":
            self.push("single")
        elif c == '"':
            self.push("double")
        elif c == "`":
            self.backtick(frame)
        elif c == "$":
            self.dollar()
        elif c in "()" and kind in ("cmdsub", "arith", "arithcmd"):
            self.paren(frame, c)
        elif c in "[]" and kind in ("arithbr", "subscript"):
            self.bracket(frame, c)
        elif c == "{" and kind in ("offset", "param"):
            frame.depth += 1  # bash counts braces: ${x:-{a}} is '{a}'
        elif c == "}" and kind in ("offset", "param"):
            if frame.depth:
                frame.depth -= 1
            else:
                self.pop(i)
                if kind == "offset":
                    self.i = i  # the '}' belongs to the enclosing ${...}: read it again
        elif c == "<" and text.startswith("<", self.i) and kind in _SHELL_KINDS:
            self.heredoc_operator()
        elif c == "\n" and self.pending and kind not in ("param", "offset"):
            # a newline inside ${...} is part of a word: the here-documents' bodies
            # begin after the line's own newline
            self.heredoc_bodies()

    # -- words ---------------------------------------------------------------------
    def read_word(self, frame: _Frame, c: str) -> bool:
        """Word bookkeeping for character ``c`` of a shell or ``[[`` frame, before it is
        read. True: ``c`` needs no further reading here (a frame was opened or closed,
        and the frame now on top reads on from ``self.i``)."""
        i, text = self.i, self.text
        if c in "<>" and self.peek() == "(" and frame.kind != "cond":
            # <(...) or >(...): a process substitution, in a word
            frame.piped = False
            if frame.word is None:
                frame.word = i
            self.process_substitution()
            return True
        closes_backtick = c == "`" and (
            frame.kind == "backtick" or (frame.kind == "cond" and self.stack[-2].kind == "backtick")
        )
        if c in _BLANKS or c in _OPERATORS or closes_backtick:
            if c == "(" and frame.word is not None and text[frame.word : i].endswith("="):
                frame.compound += 1  # name=( ... ): an array assignment
                if frame.compound == 1:
                    frame.arrays.append((frame.word, []))
            if frame.word is not None and self.end_word(frame, i):
                return True
            if frame.kind == "cond":
                return False  # in [[ ... ]] these only separate words
            if c == "(" and self.function_parens(frame):
                return True
            if c == "(" and self.peek() == "(" and (frame.cmd_pos or frame.prev == "for"):
                self.mark(i, i + 2, Ctx.UNQUOTED)
                self.i += 2
                self.push("arithcmd")
                return True
            self.operator(frame, c)
            return False
        if frame.word is None:
            if c == "\\" and self.peek() == "\n":
                return False  # a line continuation: no word
            if c == "#":
                # a comment: only where no word is in progress (bash: at the start of a
                # word), not after an escaped blank or a line continuation inside a word
                end = text.find("\n", i)
                end = len(text) if end < 0 else end
                self.mark(i, end, Ctx.COMMENT)
                self.i = end  # the newline itself is read normally (it may start heredocs)
                return True
            frame.word = i
            frame.piped = False
        if c == "[" and (
            _NAME.fullmatch(text, frame.word, i) or (frame.word == i and frame.compound)
        ):
            self.i += 1  # name[ ... ], or [ ... ]= in name=( ... )
            self.push("subscript")
            return True
        return False

    def function_parens(self, frame: _Frame) -> bool:
        """At ``(``: whether it opens the ``()`` of a function's definition (``f() {``,
        ``function f() {``), then read whole: no subshell, and the name before it no
        command (its body's commands follow)."""
        close = self.i + 1
        while close < len(self.text) and self.text[close] in " \t":
            close += 1
        if frame.compound or not self.text.startswith(")", close):
            return False
        if len(frame.cmd) == 1 and not frame.assigns and not frame.bypass:
            frame.body_of = _unquoted(self.text[slice(*frame.cmd[0])])
            self.functions.add(frame.body_of)
        elif frame.cmd or not frame.defining:
            return False
        frame.cmd, frame.cmd_start, frame.pipe_start = [], None, None
        frame.cmd_pos, frame.prev, frame.defining = True, "", False
        self.i = close + 1
        return True

    def open_body(self, frame: _Frame, start: int) -> None:
        """A compound command opens at ``start``: a function's body, right after its
        definition's name (``f() {``, ``function f {``, ``f() (``)."""
        if frame.body_of:
            frame.bodies.append((frame.body_of, len(frame.groups), start))
            frame.body_of = ""
        if frame.coproc_at is not None:
            frame.coprocs.append((len(frame.groups), frame.coproc_at))
            frame.coproc_at = None

    def close_body(self, frame: _Frame, end: int) -> None:
        """The innermost compound command ends before ``end``: if a function's body, it
        is recorded."""
        if frame.bodies and frame.bodies[-1][1] == len(frame.groups):
            name, _, start = frame.bodies.pop()
            self.bodies.append((name, start, end))
        if frame.coprocs and frame.coprocs[-1][0] == len(frame.groups):
            self.coproc(frame.coprocs.pop()[1], end)

    def coproc(self, start: int, end: int) -> None:
        """The coprocess ``text[start:end]`` (``coproc { ...; }``, ``coproc NAME (
        ... )``, ``coproc cmd ...``) ends: what its commands print, any ``read`` of the
        text may read (``read -r m <&"${COPROC[0]}"``, ``read -u "${NAME[0]}"``), as
        it may a descriptor ``exec`` opened (found by review: the value reached ``m``
        unseen and tar ran its ``--to-command``)."""
        self.group_inputs.append((start, end))

    def eval_flows(self, words: list[tuple[int, int]]) -> list[Flow]:
        """What ``eval`` with the words ``words`` gives variables when its text reads
        one at the time it runs (``eval "y=\\$x"``, ``eval 'read -r y <<< $x'``: found
        by review, ``y`` took the value unseen and tar ran its ``--to-command``).

        A text that is constant (no value, no expansion before eval runs) is scanned as
        shell: each variable it assigns may hold any character of each variable it
        reads there (its flows, read as copies: ``y`` takes ``x``'s values, whatever
        eval does with them). A text that expands something before eval reads it, as
        well as a ``\\$`` (``eval "y=\\$$name"``), is not known here: any variable
        may then hold any value of the command, as through a name reference to a
        computed name. The text itself is eval's program text, which the code check
        reads."""
        escaped = False
        constant = True
        parts: list[str] = []
        for start, stop in words:
            for k in range(start, stop):
                c, q = self.text[k], self.ctx[k]
                if c in "$`" and q in (Ctx.SINGLE, Ctx.ESCAPED):
                    escaped = True  # read when eval runs
                elif c in "$`\x00" and q in (Ctx.UNQUOTED, Ctx.DOUBLE):
                    constant = False  # expanded before eval runs
            parts.append(_unquoted(self.text[start:stop]))
        if not escaped:
            return []  # eval reads no variable of its own: nothing flows through it
        if not constant:
            return [Flow("eval", (), floor=ANY, also=ANY_VARIABLE)]
        inner = " ".join(parts)
        scanned = scan(inner)
        flows: list[Flow] = []
        for flow in scanned.flows:
            read = {flow.also} if flow.also else set()
            for start, stop in flow.sources:
                for match in _EVAL_READS.finditer(inner, start, stop):
                    name = match.group(1) or ANY_VARIABLE
                    read.add("@" if name[0].isdigit() or name in "@*" else name)
            flows.extend(Flow(flow.name, (), floor=ANY, also=name) for name in sorted(read))
        return flows

    def named_places(
        self, named: _NamedCommand, flows: list[Flow]
    ) -> list[tuple[int, int, Ctx, str]]:
        """The places of the arguments of ``named``, a command whose name is a
        variable's value, read as those of each command the variable may name (found by
        review: ``e=eval; $e "$x"``, ``e=bash; $e -c "$x"``, ``cmd=(eval); "${cmd[@]}"
        "$x"`` ran the value), and of what it reads on standard input, program text when
        one of them is a shell reading its commands there (``e=bash; echo "$x" | $e``,
        ``| ${e} -s``, ``cat <<<"$x" | $e`` ran the value, found by review).

        Each value the text gives the variable (and the variables it copies), when it
        is the template's own text, is a command line's first words: ``e=echo`` leaves
        the arguments data, ``e=eval`` makes them program text. A value the text
        computes (a command substitution, ``read``, an eval's copy, the environment: a
        variable never assigned) is not known here: the arguments are then program
        text, as if it named eval. A value taken from a function's arguments (``c=$1;
        "$c" "$@"``) or holding a value itself is followed where it comes from
        (:mod:`~flowbatch.render.codeflow`)."""
        name, how, cmd = named.name, named.how, named.cmd
        text = self.text
        raw = [text[start:stop] for start, stop in cmd]
        words = [_unquoted(w) for w in raw]
        lines: list[list[str]] = []
        given, unknown = self.constant_values(name, flows)
        for values in given:
            if how == "all" and values:  # "${cmd[@]}": the array's elements, its words
                lines.append(" ".join(values).split())
            else:  # one element (or a loop's word) each time, split when unquoted
                lines.extend(v.split() if how == "split" else [v] for v in values)
        label = f"the command ${name} names"
        places: list[tuple[int, int, Ctx, str]] = []
        stdin: list[str] = []
        if unknown:
            what = (
                f"an argument of {label}, whose value is not known here (it may be eval or a shell)"
            )
            places.extend((*cmd[k], Ctx.CODE, what) for k in range(1, len(cmd)))
            stdin.append(f"the input of {label}, whose value is not known here (it may be a shell)")
        for line in lines:
            found, reads, _ = command_places(line + words[1:], line + raw[1:])
            if reads is not None and reads[0] is Ctx.CODE:
                stdin.append(f"{reads[1]} ({label}: {' '.join(line)})")
            shown = " ".join(line)
            for j, ctx, what in found:
                k = j - len(line) + 1
                if k >= 1:
                    if what != COMMAND_NAME:
                        what = f"{what} ({label}: {shown})"
                    places.append((*cmd[k], ctx, what))
        if stdin:  # the first reason is the message; every input is marked once
            feeds = named.inputs + [doc.body for doc in named.docs if doc.body is not None]
            places.extend((start, stop, Ctx.CODE, stdin[0]) for start, stop in feeds)
        return places

    def constant_values(self, name: str, flows: list[Flow]) -> tuple[list[list[str]], bool]:
        """The values the text gives variable ``name`` (and the variables it copies) as
        its own constant text, those of each assignment (or loop) apart, and whether
        it may hold a value not known here: one the text computes (a command
        substitution, ``read``, an eval's copy) or the environment's (a variable never
        assigned). A value taken from a function's arguments (``c=$1``) or holding a
        request's value itself is neither: codeflow follows it where it comes from."""
        text = self.text
        out: list[list[str]] = []
        unknown = False
        seen: set[str] = set()
        todo = [name]
        while todo:
            var = todo.pop()
            if var in seen:
                continue
            seen.add(var)
            given = [flow for flow in flows if flow.name == var]
            unknown = unknown or not given
            for flow in given:
                if flow.also == ANY_VARIABLE or flow.stdin or not (flow.sources or flow.also):
                    unknown = True
                elif flow.also and flow.also != "@":
                    todo.append(flow.also)
                values: list[str] = []
                for start, stop in flow.sources:
                    source = text[start:stop]
                    if start == stop and text[stop : stop + 1] == "(":
                        continue  # `a=(`: the array's elements are its other flow
                    if not any(
                        text[k] in "$`\x00" and self.ctx[k] in (Ctx.UNQUOTED, Ctx.DOUBLE)
                        for k in range(start, stop)
                    ):
                        values.append(_unquoted(source))
                    elif "\x00" not in source and not _POSITIONAL_ONLY.fullmatch(source):
                        unknown = True
                out.append(values)
        return out, unknown

    def held_eval_code(self, flows: list[Flow]) -> None:
        """The variables read by the texts an eval (or a trap) is given in a variable
        (``n='eval $x'; eval "$n"``, ``n='$x'; eval "$n"`` ran the value, found by
        review): each constant value the template gives the variable is scanned as an
        eval text is (:meth:`eval_code`). A value not known here (computed, or from
        the environment) may read any variable: every variable holding a request's
        value is then program text."""
        for name, at, command in self.held_evals:
            given, unknown = self.constant_values(name, flows)
            for value in {v for values in given for v in values}:
                self.text_code(value, True, at, f'{command} "${name}" ({name}={value})')
            if unknown:
                what = (
                    f'{command} "${name}", a text whose value is not known'
                    " here (it may read any variable): give the variable its text in the"
                    " command, or let the program read the value as data"
                )
                self.eval_reads.append((ANY_VARIABLE, at, what))

    def eval_code(self, words: list[tuple[int, int]], command: str = "eval") -> None:
        """The variables ``eval`` with the words ``words`` reads as program text when it
        runs (found by review: ``eval eval "\\$x"``, ``eval 'bash -c "$x"'``, ``eval
        '$x'`` ran the value, read when eval ran, not where the text stands), or, with
        ``command`` ``trap``, a trap's action when its signal comes (``trap "\\$x"
        EXIT``, ``trap 'eval $x' EXIT`` ran the value at the script's end).

        The text is scanned as shell: a variable it reads in its own program text (an
        eval's or a shell's, a command's name) is program text. In a text built by an
        expansion, a ``$`` in its program text followed by no name (``eval "eval
        \\"\\$$c\\""``: a name the first expansion computes) reads any variable."""
        constant = True
        parts: list[str] = []
        at = words[0][0] if words else 0
        for start, stop in words:
            for k in range(start, stop):
                if self.text[k] in "$`\x00" and self.ctx[k] in (Ctx.UNQUOTED, Ctx.DOUBLE):
                    constant = False
                    # a variable's value is the text (`eval "$n"`): its values are
                    # scanned in `run`, every flow known (held_eval_code)
                    held = _HELD.match(self.text, k, stop)
                    if held is not None:
                        self.held_evals.append((held.group(1), at, command))
            parts.append(_unquoted(self.text[start:stop]))
        inner = " ".join(parts)
        if "$" not in inner:
            return  # eval reads no variable of its own
        self.text_code(inner, constant, at, command)
        if constant and words:
            self.eval_option_reads(words)

    def text_reads(self, inner: str, at: int, command: str) -> list[tuple[str, int, str]]:
        """The variables the constant text ``inner``, a function's argument its body
        runs as ``command`` (an eval or a trap, where the body is ``at``), reads as
        program text when it runs (``g() { eval "$1"; }; g 'eval $x'``): asked by
        :func:`~flowbatch.render.codeflow.program_sources`, which follows them."""
        known = len(self.eval_reads)
        self.text_code(inner, True, at, command)
        return self.eval_reads[known:]

    def text_code(self, inner: str, constant: bool, at: int, command: str) -> None:
        """The variables the text ``inner`` (of ``command``, an eval or a trap at ``at``;
        ``constant``: no expansion built it) reads as program text when it runs."""
        when = "when its signal comes" if command.startswith("trap") else "when it runs"
        what = f"the program text of {command}, read {when} ({_shown(inner)})"
        names: list[str] = []
        for a, b, ctx, _ in scan(inner).places:
            if ctx is not Ctx.CODE:
                continue
            for k in range(a, b):
                if inner[k] == "$":
                    match = _EVAL_READS.match(inner, k, b)
                    if match is not None:
                        names.append(match.group(1) or "")  # ${!: an indirection
                    elif not constant:
                        # `\$$c`: a name the first expansion computes: any variable
                        names.append("")
        for name in names:
            name = name or ANY_VARIABLE
            name = "@" if name[0].isdigit() or name in "@*" else name
            self.eval_reads.append((name, at, what))

    def eval_option_reads(self, words: list[tuple[int, int]]) -> None:
        """The variables the constant eval text of ``words`` reads where its commands
        may read options (found by review: ``eval 'tar -xf data.tar "$x"'`` gave tar
        the value's ``--to-command``). The text is read as eval reads it: the quotes of
        its own words removed, those inside kept."""
        kept: list[str] = []
        for start, stop in words:
            for k in range(start, stop):
                c, q = self.text[k], self.ctx[k]
                if (q is Ctx.UNQUOTED and c in "'\"\\") or (c, q) in _CLOSING_QUOTES:
                    continue  # the eval word's own quoting (a closing quote is inside)
                if q is Ctx.DOUBLE and c == "\\" and self.text[k + 1 : k + 2] in '$`"\\':
                    continue
                kept.append(c)
            kept.append(" ")
        inner = "".join(kept)
        if "$" not in inner:
            return
        found = scan(inner)
        span = (words[0][0], words[-1][1])
        for a, b, command in found.options:
            for match in _EVAL_READS.finditer(inner, a, b):
                name = match.group(1) or ANY_VARIABLE
                name = "@" if name[0].isdigit() or name in "@*" else name
                begins = not inner[a : match.start()].strip("\"'")
                if begins or found.quoting[match.start()] is Ctx.UNQUOTED:
                    self.eval_options.append((*span, command, name, begins))

    def feed_reads(self, docs: list[_Heredoc]) -> None:
        """``docs`` are read by ``read`` or ``mapfile``, or by a loop or group around
        one (``while read -r m; do ...; done <<EOF``, ``cat <<EOF | while read``): as
        everywhere, any ``read`` of the text is taken to read their bodies."""
        for doc in docs:
            if doc.body is None:
                doc.reads = True  # given when its body is read
            else:
                self.group_inputs.append(doc.body)

    def operator(self, frame: _Frame, c: str) -> None:
        """An unquoted blank or operator character in a shell frame."""
        prev = self.text[self.i - 1] if self.i else ""
        if c in " \t" or (c == "\n" and frame.piped) or (c == "&" and prev == "|"):
            return  # a blank; a newline after '|'; the '&' of '|&'
        if (
            c in "<>"
            or (c == "&" and (prev in ("<", ">") or self.peek() == ">"))
            or (c == "|" and prev == ">")
        ):
            # <, >, >&, &>, >|: the next word is a target
            frame.redirect = "<" if c == "<" or self.peek() == "<" else ">"
            return
        if c == ")" and frame.compound:
            frame.compound -= 1
            return
        if c == "(" and frame.compound:
            return
        if c == "(" and frame.cmd_pos and not frame.cmd and not frame.assigns:
            # a subshell: its pipeline goes on after its ')'
            start = self.i if frame.pipe_start is None else frame.pipe_start
            frame.groups.append(("(", start))
            self.open_body(frame, self.i)
            if frame.in_pipe and frame.pipe_start is not None:
                # `printf ... | ( read -r m; ... )`: what the pipe's commands print
                self.group_inputs.append((frame.pipe_start, self.i))
                self.feed_reads(frame.pipe_docs)
            frame.pipe_start, frame.piped, frame.in_pipe = None, False, False
            return
        if c == ")" and frame.groups and frame.groups[-1][0] == "(":
            self.end_command(frame, self.i, piped=False)
            self.close_body(frame, self.i + 1)
            frame.pipe_start = frame.groups.pop()[1]
            frame.cmd_pos, frame.prev, frame.args, frame.redirect = False, "", "", ""
            return
        # newline ; & | ( ): a new command begins
        piped = c == "|" and prev != "|" and self.peek() != "|"
        self.end_command(frame, self.i, piped=piped)
        frame.cmd_pos, frame.prev, frame.args, frame.redirect = True, "", "", ""
        frame.piped = piped

    def end_command(self, frame: _Frame, end: int, *, piped: bool) -> None:
        """A simple command of ``frame`` ends before ``end`` (``piped``: its pipeline goes
        on): mark the words it reads as names, program text or arithmetic, and, when it
        reads program text (or a special integer variable's value) from standard input,
        what it reads there: its here-documents and here-strings, and the commands before
        it in its pipeline (their output), here-documents included."""
        if frame.kind not in _SHELL_KINDS:
            return
        text, places = self.text, self.places
        stdin: tuple[Ctx, str] | None = None
        env_code = False
        feeds: str | None = None
        if frame.cmd:
            raw = [text[start:stop] for start, stop in frame.cmd]
            words = [_unquoted(w) for w in raw]
            found, stdin, env_code = command_places(words, raw)
            places.extend((*frame.cmd[k], ctx, what) for k, ctx, what in found)
            # a file of program text given as a process substitution (`source <(echo
            # "$x")`, `bash <(...)`): what its commands print is the program, so what
            # they read is program text, as a pipe's into a shell (found by review:
            # the variable's value ran)
            places.extend(
                (frame.cmd[k][0] + 2, frame.cmd[k][1] - 1, ctx, f"{what} (what <(...) prints)")
                for k, ctx, what in found
                if ctx is Ctx.CODE
                and k
                and what != COMMAND_NAME
                and raw[k].startswith("<(")
                and raw[k].endswith(")")
            )
            # a call of a function defined before it in the text: its arguments are its
            # positional parameters, read where its body reads them (below, and
            # Lexer.run), not options of a program (`f -- "$m"` too)
            options = [(*frame.cmd[k], what) for k, what in option_words(words)]
            if frame.bypass or words[0] not in self.functions:
                self.options.extend(options)
            else:
                self.call_options.extend(options)
            self.named_by.update(m.group(1) for m in _EXPANDS.finditer(raw[0]))
            named = _NAMED_BY.fullmatch(raw[0])
            inputs = list(frame.inputs)
            start, stop = frame.pipe_start, frame.cmd_start
            if start is not None and stop is not None and start < stop:
                inputs.append((start, stop))  # `echo "$x" | $e`: what the pipe prints
            docs = frame.pipe_docs + frame.docs
            if named is not None and (len(frame.cmd) > 1 or inputs or docs):
                how = "all" if named.group(3) == "[@]" else "split" if not named.group(1) else ""
                variable = named.group(2) or named.group(4)
                self.by_variable.append(_NamedCommand(variable, how, frame.cmd, inputs, docs))
            if not frame.bypass and len(frame.cmd) > 1:
                self.calls.append((words[0], tuple(frame.cmd[1:])))
            feeds = xargs_feeds(words)
            self.option_inputs.extend(
                (*frame.cmd[k], what, f"{_base(words[0])} -c's program unquoted")
                for k, what in split_option_words(words)
            )
        if frame.coproc_at is not None and frame.cmd:
            # `coproc cmd ...`: a simple command as the coprocess
            self.coproc(frame.coproc_at, end)
            frame.coproc_at = None
        name = _unquoted(text[slice(*frame.cmd[0])]) if frame.cmd else ""
        if not frame.cmd or name in _GROUP_CLOSE or name == "exec":
            # `done <<< $x`, `) < <(...)`, `done <<EOF`; and `exec 3<<< $x`, whose
            # descriptor any later `read -u 3` or `read <&3` reads (found by review)
            self.group_inputs.extend(frame.inputs)
            self.feed_reads(frame.docs)
        elif name in _READERS:
            self.feed_reads(frame.docs)  # `read -r m <<EOF`
            if frame.in_pipe and frame.pipe_start is not None and frame.cmd_start is not None:
                # `printf ... | read -r m`: what the pipe's commands print (bash runs a
                # pipe's last command in a subshell, unless `shopt -s lastpipe`)
                self.group_inputs.append((frame.pipe_start, frame.cmd_start))
                self.feed_reads(frame.pipe_docs)
        if frame.cmd or frame.assigns or frame.arrays:
            words = [_unquoted(text[start:stop]) for start, stop in frame.cmd]
            self.flows.extend(
                command_flows(text, frame.cmd, frame.assigns, frame.arrays, frame.inputs, words)
            )
            if words and words[0] == "eval":
                self.flows.extend(self.eval_flows(frame.cmd[1:]))
                self.eval_code(frame.cmd[1:])
            action = _trap_action(words)
            if action is not None:
                self.eval_code([frame.cmd[action]], "trap")
        if feeds is not None:  # what xargs reads: as where stdin is program text, below
            via = "the input of xargs"
            if frame.pipe_start is not None and frame.cmd_start is not None:
                self.option_inputs.append((frame.pipe_start, frame.cmd_start, feeds, via))
            for doc in frame.pipe_docs + frame.docs:
                if doc.body is None:
                    doc.feeds = feeds
                else:
                    self.option_inputs.append((*doc.body, feeds, via))
            self.option_inputs.extend((start, stop, feeds, via) for start, stop in frame.inputs)
        for start, stop in frame.assigns:
            target = _NAME.match(text, start, stop)
            if target is not None and target.group(0) in SPECIAL_INTEGERS:
                places.append((start, stop, Ctx.ARITH, f"{target.group(0)}="))  # RANDOM=$x
            elif env_code:
                places.append((start, stop, Ctx.CODE, f"{_unquoted(raw[0])} (its environment)"))
        if stdin is not None:
            if frame.pipe_start is not None and frame.cmd_start is not None:
                places.append((frame.pipe_start, frame.cmd_start, *stdin))
            for doc in frame.pipe_docs + frame.docs:
                if doc.body is None:
                    doc.ctx = stdin  # marked when its body is read
                else:
                    places.append((*doc.body, *stdin))
            places.extend((start, stop, *stdin) for start, stop in frame.inputs)
        if piped:
            frame.pipe_docs += frame.docs
        else:
            frame.pipe_start, frame.pipe_docs = None, []
        frame.in_pipe, frame.bypass, frame.defining = piped, False, False
        frame.cmd, frame.assigns, frame.docs, frame.inputs = [], [], [], []
        frame.cmd_start, frame.arrays = None, []

    def end_word(self, frame: _Frame, end: int) -> bool:
        """The word of ``frame`` ends before ``end``. True if a frame was opened or
        closed (``[[`` and ``]]``)."""
        start, frame.word = frame.word, None
        assert start is not None
        word = self.text[start:end]
        if frame.kind != "cond":
            if frame.pipe_start is None:
                frame.pipe_start = start
            if frame.cmd_start is None:
                frame.cmd_start = start
        if frame.kind == "cond":
            if word != "]]":
                frame.words.append((start, end))
                return False
            self.stack.pop()
            words = frame.words
            for k, (s, e) in enumerate(words):
                if self.text[s:e] in _ARITH_TESTS:
                    self.arith.extend(words[n] for n in (k - 1, k + 1) if 0 <= n < len(words))
                elif self.text[s:e] in ("-v", "-R") and k + 1 < len(words):
                    self.places.append((*words[k + 1], Ctx.NAME, f"[[ {self.text[s:e]} ]]"))
                elif self.text[s:e] == "=~" and 0 < k < len(words) - 1:
                    # the expression begins after the operator's blanks, not at the next
                    # word here: a '(' that opens it separates words in [[ ... ]], and
                    # `(.*)`'s group was lost (found by review: `[[ $m =~ (.*) ]]`, then
                    # "${BASH_REMATCH[1]}", passed a value's option)
                    begin = e
                    while begin < start and self.text[begin] in _BLANKS:
                        begin += 1
                    regex = self.regex(begin, start)
                    groups = None if regex is None else captures(regex)
                    self.flows.extend(match_flows(words[k - 1], groups))
            self.stack[-1].cmd_pos = True
            return True
        if frame.redirect:
            if frame.redirect == "<<<" or (frame.redirect == "<" and word.startswith("<(")):
                frame.inputs.append((start, end))  # what the command reads as its input
            frame.redirect = ""
            return False
        name = _unquoted(word)
        if frame.compound and frame.arrays and start > frame.arrays[-1][0]:
            frame.arrays[-1][1].append((start, end))  # an element of name=( ... )
        defining, frame.defining = frame.defining, False
        if frame.cmd_pos:
            if name == "function" and not frame.cmd and not defining:
                frame.prev = name  # its name follows: that word is no command
                return False
            if frame.prev == "function":
                self.functions.add(name)
                frame.prev, frame.defining = name, True  # `()` may follow
                frame.body_of = name
                return False
            if name == "coproc" and not frame.cmd:
                frame.coproc_at = start
            elif (
                frame.prev == "coproc"
                and frame.coproc_at is not None
                and _NAME.fullmatch(word)
                and self.text[end:].lstrip(" \t")[:1] in ("{", "(")
            ):
                # `coproc NAME { ...; }`: the coprocess's name (its descriptors are in
                # the array NAME), no command
                frame.prev = name
                return False
            if name in ("command", "builtin"):
                frame.bypass = True  # `command tar`: the program, not a function tar
            if name in _GROUP_OPEN:
                if frame.in_pipe and frame.pipe_start is not None:
                    # `printf ... | while read -r m; do`: what the pipe's commands print
                    self.group_inputs.append((frame.pipe_start, start))
                    self.feed_reads(frame.pipe_docs)
                frame.groups.append(("kw", start if frame.pipe_start is None else frame.pipe_start))
                self.open_body(frame, start)
            elif name in _GROUP_CLOSE and frame.groups and frame.groups[-1][0] == "kw":
                self.close_body(frame, end)
                frame.pipe_start = frame.groups.pop()[1]
            if word == "[[":
                frame.cmd_pos = False
                self.push("cond")
                self.stack[-1].start = end
                return True
            if name == "let":
                frame.args = "let"
            elif name in ("declare", "typeset", "local"):
                frame.args = "declare"
            if _ASSIGNMENT.match(word):
                frame.assigns.append((start, end))
            elif not (
                name in _OPENERS
                or ((frame.prev == "time" or frame.bypass) and word.startswith("-"))
            ):
                frame.cmd_pos = False
                if not frame.compound:
                    frame.cmd.append((start, end))
        else:
            if not frame.compound:
                frame.cmd.append((start, end))
            if frame.args == "let" or (
                frame.args == "declare -i" and (frame.compound or _ASSIGNMENT.match(word))
            ):
                self.arith.append((start, end))
            elif frame.args == "declare" and _INTEGER_OPTION.fullmatch(word):
                frame.args = "declare -i"
        if word == "{":
            frame.cmd_pos = True  # function f { ...
        frame.prev = name
        return False

    def regex(self, start: int, stop: int) -> str | None:
        """The regular expression of ``[[ ... =~ RE ]]`` whose word begins at ``start``
        (``stop``: where ``]]`` is), as bash hands it to the regex engine: quoted
        characters stand for themselves. None when it expands anything (``$re``, a
        value): not known here. Parentheses and blanks inside them are the word's."""
        text, out, depth = self.text, [], 0
        if "\x00" in text[start:stop]:
            return None  # a value in the expression
        for j in range(start, stop):
            c, q = text[j], self.ctx[j]
            if q is Ctx.ESCAPED:
                out.append(c)  # after its backslash, which bash keeps: `\.`
            elif q in (Ctx.SINGLE, Ctx.DOUBLE):
                if c in "\\$`\x00" and q is Ctx.DOUBLE:
                    return None
                if c not in "'\"":  # a closing quote: its content is the text
                    out.append("\\" + c if c in _ERE_SPECIAL else c)
            elif c in "'\"":
                continue  # an opening quote
            elif (c in _BLANKS and not depth) or (c in "&|" and text[j + 1 : j + 2] == c):
                break
            elif c == ")" and not depth:
                break  # the end of [[ ( ... ) ]]
            elif c == "`" or (c == "$" and text[j + 1 : j + 2] not in ("", *")| \t\n")):
                return None  # an expansion; a `$` at the end is an anchor
            else:
                depth += c == "("
                depth -= c == ")"
                out.append(c)
        return "".join(out)

    # -- substitutions ---------------------------------------------------------------
    def process_substitution(self) -> None:
        """At ``<(`` or ``>(``: its text is commands, up to the matching ``)``."""
        self.mark(self.i, self.i + 2, Ctx.UNQUOTED)
        self.i += 2
        self.push("cmdsub")

    def backtick(self, frame: _Frame) -> None:
        if frame.kind == "param":
            # bash finds where a backtick substitution ends before it reads the text: a
            # backtick inside a ${...} inside one ends it, the ${...} left open there
            below = len(self.stack) - 1
            while self.stack[below].kind == "param":
                below -= 1
            if self.stack[below].kind == "backtick":
                del self.stack[below + 1 :]
                frame = self.stack[-1]
        if frame.kind == "backtick":
            self.stack.pop()
            self.subs.append((frame.start, self.i - 1))
        else:
            self.push("backtick")

    def dollar(self) -> None:
        """After a ``$`` outside single quotes: ``$'``, ``$((``, ``$(``, ``$[`` open a
        frame, and so do a subscript or an offset in ``${...}``."""
        nxt = self.peek(0)
        outer = self.ctx[self.i - 1]
        if nxt == "'" and self.stack[-1].kind != "double":
            self.ctx[self.i] = outer
            self.i += 1
            self.push("ansi")
        elif nxt == "(":
            self.ctx[self.i] = outer
            if self.peek(1) == "(":
                self.ctx[self.i + 1] = Ctx.UNQUOTED
                self.i += 2
                self.push("arith")
            else:
                self.i += 1
                self.push("cmdsub")
        elif nxt == "[":
            self.ctx[self.i] = outer
            self.i += 1
            self.push("arithbr")
        elif nxt == "{":
            match = _PARAMETER.match(self.text, self.i)
            if match is None:
                return
            if self.stack[-1].kind in _UNQUOTED_KINDS:
                # one piece of its word up to the matching '}', whatever it holds:
                # bash splits the result of ${x:- -v}, not its text
                self.ctx[self.i] = outer
                self.i += 1
                self.push("param")
            after = match.end()
            if self.text.startswith("[", after) and _NAME.fullmatch(match.group(1)):
                self.mark(self.i, after + 1, outer)
                self.i = after + 1
                self.push("subscript", param=True)
            else:
                self.offset(after, outer)

    def offset(self, at: int, outer: Ctx) -> None:
        """``${name`` ends before ``at``: a ``:`` there (not ``:-``, ``:=``, ``:+``,
        ``:?``) starts an offset, which is arithmetic up to the closing ``}``."""
        text = self.text
        if text.startswith(":", at) and text[at + 1 : at + 2] not in ("-", "=", "+", "?"):
            self.mark(self.i, at + 1, outer)
            self.i = at + 1
            self.push("offset")

    def paren(self, frame: _Frame, c: str) -> None:
        """``(`` or ``)`` in a ``$(``, ``$((`` or ``((`` frame (``self.i`` is past it)."""
        if c == "(":
            frame.depth += 1
        elif frame.depth:
            frame.depth -= 1
        elif frame.kind == "cmdsub":
            self.pop(self.i - 1)
        elif self.peek(0) == ")":  # arithmetic ends with '))'
            self.ctx[self.i] = Ctx.UNQUOTED
            self.i += 1
            self.pop(self.i - 2)
            if frame.kind == "arithcmd":
                self.stack[-1].cmd_pos = True

    def bracket(self, frame: _Frame, c: str) -> None:
        """``[`` or ``]`` in a ``$[`` or subscript frame (``self.i`` is past it)."""
        if c == "[":
            frame.depth += 1
        elif frame.depth:
            frame.depth -= 1
        else:
            self.pop(self.i - 1)
            if frame.param:  # ${name[...]:offset}
                outer = Ctx.DOUBLE if self.stack[-1].kind == "double" else Ctx.UNQUOTED
                self.offset(self.i, outer)

    def step_double(self) -> None:
        c = self.text[self.i]
        self.ctx[self.i] = Ctx.DOUBLE
        if c == "\\":
            self.escape(Ctx.DOUBLE)
            return
        self.i += 1
        if c == '"' and self.stack[-1].kind == "double":
            self.stack.pop()
        elif c == "`":
            self.push("backtick")
        elif c == "$":
            self.dollar()

    def step_single(self, *, ansi: bool) -> None:
        c = self.text[self.i]
        self.ctx[self.i] = Ctx.SINGLE
        if ansi and c == "\\":
            self.escape(Ctx.SINGLE)
            return
        self.i += 1
        if c == "'":
            self.stack.pop()

    # -- here-documents --------------------------------------------------------------
    def heredoc_operator(self) -> None:
        """At ``<<`` (self.i is on the second ``<``): read the delimiter word."""
        text = self.text
        self.ctx[self.i] = Ctx.UNQUOTED
        self.i += 1
        if text.startswith("<", self.i):  # '<<<' is a here-string, not a heredoc
            self.ctx[self.i] = Ctx.UNQUOTED
            self.i += 1
            self.stack[-1].redirect = "<<<"
            return
        self.stack[-1].redirect = ""  # the delimiter is read here, not as a word
        strip_tabs = text.startswith("-", self.i)
        if strip_tabs:
            self.i += 1
        while self.i < len(text) and text[self.i] in " \t":
            self.i += 1
        word, literal = [], False
        while self.i < len(text) and text[self.i] not in _DELIM_END:
            ch = text[self.i]
            if ch in "'\"":
                literal = True
                end = text.find(ch, self.i + 1)
                end = len(text) if end < 0 else end
                word.append(text[self.i + 1 : end])
                self.i = end + 1
            elif ch == "\\":
                literal = True
                word.append(text[self.i + 1 : self.i + 2])
                self.i += 2
            else:
                word.append(ch)
                self.i += 1
        if word:
            doc = _Heredoc("".join(word), strip_tabs, literal)
            self.pending.append(doc)
            self.stack[-1].docs.append(doc)

    def heredoc_bodies(self) -> None:
        """After the newline that ends a line with ``<<`` operators: skip their bodies."""
        text = self.text
        for doc in self.pending:
            body = self.i
            while True:
                if self.i >= len(text):
                    self.problem = f"here-document '{doc.delimiter}' is not terminated"
                    self.pending = []
                    return
                end = text.find("\n", self.i)
                end = len(text) if end < 0 else end
                line = text[self.i : end]
                if (line.lstrip("\t") if doc.strip_tabs else line) == doc.delimiter:
                    self.body(body, self.i, doc.literal)
                    doc.body = (body, self.i)
                    if doc.ctx is not None:  # python3 - <<EOF, read RANDOM <<EOF
                        self.places.append((body, self.i, *doc.ctx))
                    if doc.reads:  # while read -r m; do ...; done <<EOF
                        self.group_inputs.append((body, self.i))
                    if doc.feeds is not None:  # xargs tar -xf a.tar <<EOF
                        self.option_inputs.append((body, self.i, doc.feeds, "the input of xargs"))
                    self.i = end + 1
                    break
                self.i = end + 1
        self.pending = []

    def body(self, start: int, end: int, literal: bool) -> None:
        """A here-document's body, ``text[start:end]`` (its lines, newlines included).
        Quoted delimiter: nothing in it is expanded. Otherwise it is read as inside
        double quotes, ``$((...))``, ``$[...]``, ``${a[...]}`` and ``${x:...}``
        included: bash evaluates those there as anywhere else."""
        if literal:
            self.mark(start, end, Ctx.SINGLE)
            return
        sub = _Lexer(self.text[start:end], heredoc=True)
        lexed = sub.run()
        self.ctx[start:end] = lexed.quoting
        self.arith.extend((start + a, start + b) for a, b in sub.arith)
        self.places.extend((start + a, start + b, ctx, what) for a, b, ctx, what in sub.places)
        self.options.extend((start + a, start + b, what) for a, b, what in sub.options)
        self.option_inputs.extend(
            (start + a, start + b, what, via) for a, b, what, via in sub.option_inputs
        )
        self.flows.extend(flow.moved(start) for flow in lexed.flows)
        self.functions |= sub.functions
        self.bodies.extend((name, start + a, start + b) for name, a, b in sub.bodies)
        self.calls.extend(
            (name, tuple((start + a, start + b) for a, b in arguments))
            for name, arguments in sub.calls
        )
        self.subs.extend((start + a, start + b) for a, b in lexed.subs)
        self.params.extend((start + a, start + b) for a, b in lexed.params)
        if lexed.problem and self.problem is None:
            self.problem = f"in here-document: {lexed.problem}"


@functools.lru_cache(maxsize=256)
def scan(text: str) -> Scan:
    """Lex ``text`` as bash and return the context each character is read in.

    Remembered for the last texts scanned: each run of a template scans the same
    commands (values stand in them as sentinels, not as text), two or more a run.

    A quote character is read in the context outside it (the opening ``"`` of
    ``"a"`` is unquoted, ``a`` is double). Text that bash evaluates as arithmetic is
    :attr:`Ctx.ARITH` in ``contexts`` (unless escaped or a comment) and keeps its
    quoting in ``quoting``. ``problem`` is set when the text does not end at the top
    level (an open quote or substitution, a trailing backslash, a here-document without
    its delimiter line): pasted into a script, such a text would swallow what follows it.
    """
    return _Lexer(text).run()


def context_at(text: str, pos: int) -> Ctx:
    """The context of the character at ``pos`` (``pos == len(text)``: the end state)."""
    if pos < len(text):
        return scan(text).contexts[pos]
    probe = scan(text + "x")
    return probe.contexts[pos]
