"""Managed group ``known_bad_inputs``: Log4Shell, Java/.NET/PHP deserialisation, Spring and Struts
class-loader tricks, server-side template injection, exploitable paths and methods.

Log4Shell is looked for in every header (any header may be logged), the path, the query, cookies
and the body, after URL and entity decoding, and in its obfuscated forms (``${${lower:j}ndi:``,
``${${::-j}${::-n}di:``, ``${env:X:-j}``). Plain ``${var}`` templates are not touched.
"""

from __future__ import annotations

from typing import Any

from addons.waf.managed.common import (
    BODY,
    COOKIES,
    DECODE,
    DECODE_JS,
    PATH,
    PATH_CHAIN,
    QUERY,
    QUERY_STRING,
    RAW_BODY,
    SEGMENTS,
    alt,
    rx,
    stmt,
)

_ALL_HEADERS: Any = {"all_headers": {"scope": "all"}}
_LOG4J_FIELDS: list[Any] = [PATH, QUERY_STRING, QUERY, _ALL_HEADERS, COOKIES, BODY, SEGMENTS]
_FIELDS: list[Any] = [SEGMENTS, QUERY, {"all_headers": {"exclude": ["cookie"]}}, COOKIES, BODY]
_LOG4J_CHAIN = DECODE_JS

RULES: list[dict[str, Any]] = [
    rx(
        "waf/known_bad_inputs-001",
        10,
        "Log4Shell: a ${jndi:...} lookup, including nested and case-changing obfuscations",
        _LOG4J_FIELDS,
        alt(
            r"\$\{\s*jndi\s*:",
            r"\$\{[^{}]{0,40}\$\{",
            r"\$\{\s*(?:lower|upper|::-)\s*:?",
            r"\$\{[^{}]{0,40}:-\s*j\s*\}",
            r"\bjndi\s*:\s*(?:ldaps?|rmi|dns|iiop|corba|nds|nis|http|https)\s*:",
            r"\$\{\s*j\s*\$\{",
            r"%\{\s*jndi\s*:",
        ),
        _LOG4J_CHAIN,
    ),
    rx(
        "waf/known_bad_inputs-002",
        20,
        "Log4j lookups that leak secrets or environment (${env:...}, ${sys:...}) inside another lookup or a URL",
        _LOG4J_FIELDS,
        alt(
            r"\$\{[^{}]*\$\{\s*(?:env|sys|java|main|bundle|k8s|docker|spring|web|ctx|base64|date|jvmrunargs)\s*:",
            r"(?:ldaps?|rmi|dns|https?)://[^\s]*\$\{\s*(?:env|sys|java|hostname|main)\s*:",
        ),
        _LOG4J_CHAIN,
    ),
    rx(
        "waf/known_bad_inputs-003",
        30,
        "Java serialized object (AC ED 00 05, base64 rO0AB) or well-known gadget classes",
        [*_FIELDS, RAW_BODY],
        alt(
            r"\brO0AB",
            r"\x{fffd}\x{fffd}\x00\x05",
            r"(?i:org\.apache\.commons\.collections\d?\.functors)",
            r"(?i:java\.lang\.(?:runtime|processbuilder)\b)",
            r"(?i:\bysoserial\b)",
            r"(?i:javax\.management\.)",
            r"(?i:com\.sun\.rowset\.jdbcrowsetimpl)",
            r"(?i:org\.springframework\.beans\.factory\.config\.)",
            r"(?i:com\.sun\.org\.apache\.xalan\.internal\.xsltc\.trax\.templatesimpl)",
            r"(?i:!!(?:javax?|com\.sun|org\.(?:apache|springframework|hibernate)|sun)\.[\w.$]+\s*[\[({])",
        ),
        ["url_decode", "html_entity_decode"],
    ),
    rx(
        "waf/known_bad_inputs-011",
        35,
        "a body declared as a Java serialized object",
        {"header": "content-type"},
        r"application/x-java-(?:serialized-object|object)",
        ["lowercase"],
    ),
    rx(
        "waf/known_bad_inputs-004",
        40,
        "polymorphic type hints that instantiate dangerous classes (Fastjson @type, Json.NET $type, Jackson)",
        [*_FIELDS, RAW_BODY],
        alt(
            r"[\"']@type[\"']\s*:\s*[\"'](?:com\.sun|java\.|javax\.|org\.apache|com\.alibaba|org\.springframework|com\.mchange|oracle\.)",
            r"[\"']\$type[\"']\s*:\s*[\"']system\.(?:windows\.data\.objectdataprovider|diagnostics\.process|configuration\.install|management\.automation|web\.ui)",
            r"\[\s*[\"'](?:com\.sun\.rowset|org\.apache\.xbean|ch\.qos\.logback\.core\.db|com\.zaxxer\.hikari|org\.springframework\.context\.support)",
        ),
        DECODE,
    ),
    rx(
        "waf/known_bad_inputs-005",
        50,
        "Spring4Shell and Struts/OGNL: class.module.classLoader and OGNL member-access in names or values",
        [*_FIELDS, {"body_values": {"scope": "keys"}}],
        alt(
            r"\bclass\s*[.\[]\s*[\"']?\s*(?:module\s*[.\]]\s*)?[\"']?\s*classloader",
            r"\bclassloader\s*\.\s*(?:resources|urls|parent)",
            r"#_memberaccess",
            r"@ognl\.ognlcontext",
            r"%\{\s*[(#@]",
            r"\$\{\s*#(?:context|_memberaccess|request|session)",
            r"\bt\s*\(\s*java\.lang\.(?:runtime|system|processbuilder|class)\s*\)",
            r"new\s+java\.lang\.processbuilder",
        ),
        DECODE,
    ),
    rx(
        "waf/known_bad_inputs-006",
        60,
        "server-side template injection: Jinja/Twig dunder chains, Freemarker/Velocity execute, arithmetic probes",
        _FIELDS,
        alt(
            r"\{\{[^}]{0,200}(?:__class__|__mro__|__subclasses__|__globals__|__builtins__|__import__|__init__|_templatereference|\.mro\(\))",
            r"\{\{[^}]{0,80}\b(?:config\.items|request\.application|lipsum\.__globals|cycler\.__init__|joiner\.__init__|self\.__dict__)",
            r"\{\{\s*\d+\s*\*\s*['\"]?\d+['\"]?\s*\}\}",
            r"\$\{\s*\d+\s*\*\s*\d+\s*\}",
            r"#\{\s*\d+\s*\*\s*\d+\s*\}",
            r"<%=\s*\d+\s*\*\s*\d+\s*%>",
            r"freemarker\.template\.utility\.(?:execute|objectconstructor|jythonruntime)",
            r"<#assign\b[^>]*\?new\s*\(",
            r"#set\s*\(\s*\$\w+\s*=\s*[^)]*\.(?:getclass|forname)\s*\(",
            r"\.getclass\s*\(\s*\)\s*\.forname\s*\(",
            r"\{\{\s*(?:constructor\.constructor|\$on\.constructor|\[\]\.constructor)",
            r"\{\{[^}]{0,80}\bconstructor\s*\.\s*constructor\s*\(",
            r"<%=?\s*(?:system|exec|`|%x|io\.popen|file\.read|runtime\.getruntime)",
            r"\{\%\s*(?:import|include|set)\s+[^%]{0,80}(?:os|subprocess|popen)",
            r"\{\{[^}]{0,80}\|\s*(?:attr|map)\s*\(\s*['\"](?:__|\\x5f)",
        ),
        DECODE_JS,
    ),
    rx(
        "waf/known_bad_inputs-007",
        70,
        "exploitable paths: WEB-INF/META-INF, Spring actuators, Jolokia, PHPUnit eval-stdin, Tomcat manager, CGI",
        [PATH],
        alt(
            r"/(?:web|meta)-inf(?:/|$)",
            r"/actuator/(?:env|heapdump|jolokia|gateway/routes|logfile|threaddump|configprops|shutdown|restart|refresh|loggers|mappings|beans)\b",
            r"/jolokia/(?:exec|read|list|write)?",
            r"/phpunit/.*eval-stdin\.php",
            r"/manager/(?:html|text|status)\b",
            r"/invoker/(?:jmx|ejb)invokerservlet",
            r"/cgi-bin/.*\.(?:sh|cgi|pl)\b",
            r"/(?:solr/admin|jmx-console|web-console|axis2-admin|hudson/script|jenkins/script)(?:/|$)",
            r"/\.(?:git|svn|hg|bzr)/",
            r"/wls-wsat/|/_async/asyncresponseservice",
            r"/vendor/phpunit/",
        ),
        PATH_CHAIN,
    ),
    stmt(
        "waf/known_bad_inputs-008",
        80,
        "WebDAV and diagnostic methods an API never serves (PROPFIND, TRACE, TRACK, DEBUG...)",
        {
            "regex": {
                "field": "method",
                "pattern": r"^(?:propfind|proppatch|mkcol|copy|move|lock|unlock|trace|track|debug|search|connect)$",
                "transformations": ["lowercase"],
            }
        },
    ),
    rx(
        "waf/known_bad_inputs-009",
        90,
        'PHP serialized objects (O:8:"Class":1:{...}) and phar deserialisation',
        [*_FIELDS, RAW_BODY],
        alt(r"\b[oc]:\d+:\"[a-z_\\][\w\\]*\":\d+:\{", r"\bphar://"),
        DECODE,
    ),
    rx(
        "waf/known_bad_inputs-010",
        100,
        "Node.js and Python deserialisation payloads (node-serialize _$$ND_FUNC$$_, pickle opcodes)",
        [*_FIELDS, RAW_BODY],
        alt(
            r"_\$\$nd_func\$\$_",
            r"\bcos\nsystem\n",
            r"\bc__builtin__\n",
            r"\bcposix\nsystem",
            r"!!python/object/(?:apply|new):",
        ),
        DECODE,
    ),
]
