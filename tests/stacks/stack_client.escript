%% An Erlang/OTP ssl client for the stack tests (run with escript): one case per input
%% line, one result line per case, all in one VM; each through an HTTP CONNECT proxy the
%% way hackney does it: gen_tcp to the proxy, CONNECT, then ssl:connect/3 on that socket.
%% With no server_name_indication option OTP sends no SNI there: the hackney incident.
%%
%% Input (tab separated): id proxy_port host port sni|- cafile max_version(1.2|1.3)
%% Output: id <TAB> ok|error <TAB> message
-mode(compile).

main(_) ->
    {ok, _} = application:ensure_all_started(ssl),
    loop().

loop() ->
    case io:get_line("") of
        eof -> ok;
        {error, _} -> ok;
        Line ->
            case string:split(string:trim(Line, trailing, "\r\n"), "\t", all) of
                [Id, Proxy, Host, Port, Sni, CaFile, Max] ->
                    Result = try run(list_to_integer(Proxy), Host, Port, Sni, CaFile, Max)
                             catch C:R -> {error, {C, R}} end,
                    case Result of
                        ok -> io:format("~s\tok\t~n", [Id]);
                        {error, Why} -> io:format("~s\terror\t~0p~n", [Id, Why])
                    end;
                _ -> ok
            end,
            loop()
    end.

run(Proxy, Host, Port, Sni, CaFile, Max) ->
    {ok, S} = gen_tcp:connect("127.0.0.1", Proxy, [binary, {active, false}], 10000),
    Target = [Host, ":", Port],
    ok = gen_tcp:send(S, ["CONNECT ", Target, " HTTP/1.1\r\nHost: ", Target, "\r\n\r\n"]),
    case head(S, <<>>) of
        <<"HTTP/1.1 200", _/binary>> -> tls(S, Host, Sni, CaFile, Max);
        <<"HTTP/1.0 200", _/binary>> -> tls(S, Host, Sni, CaFile, Max);
        Other -> gen_tcp:close(S), {error, {connect_answered, Other}}
    end.

tls(S, Host, Sni, CaFile, Max) ->
    Versions = case Max of "1.2" -> ['tlsv1.2']; _ -> ['tlsv1.3', 'tlsv1.2'] end,
    Name = case Sni of "-" -> []; _ -> [{server_name_indication, Sni}] end,
    Opts = [{verify, verify_peer}, {cacertfile, CaFile}, {versions, Versions} | Name],
    case ssl:connect(S, Opts, 15000) of
        {ok, T} ->
            ok = ssl:send(T, ["GET / HTTP/1.1\r\nHost: ", Host, "\r\nConnection: close\r\n\r\n"]),
            Reply = ssl:recv(T, 0, 15000),
            ssl:close(T),
            case Reply of
                {ok, <<"HTTP/1.1 200", _/binary>>} -> ok;
                Other -> {error, {no_http_answer, Other}}
            end;
        {error, Why} -> gen_tcp:close(S), {error, Why}
    end.

head(S, Acc) ->
    case binary:match(Acc, <<"\r\n\r\n">>) of
        nomatch when byte_size(Acc) < 8192 ->
            case gen_tcp:recv(S, 0, 10000) of
                {ok, More} -> head(S, <<Acc/binary, More/binary>>);
                _ -> Acc
            end;
        _ -> Acc
    end.
