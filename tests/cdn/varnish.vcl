vcl 4.1;

# Varnish as a second stand-in for CloudFront in front of the origin, keyed like the
# cache policy of cloudformation/fleetpack.yaml: the URL alone (path and query, which
# holds the device's list as `installed=`). Lifetimes come from the origin's
# Cache-Control (s-maxage), not from this file. @ORIGIN_HOST@, @ORIGIN_PORT@ and
# @SECRET@ are filled in by tests/cdn/varnish.rs.
#
# What Varnish does on its own, and the tests rely on: on a miss it drops the
# device's conditional headers (If-None-Match, If-Modified-Since) from the request to
# the origin; it answers a device's If-None-Match that names the cached ETag with 304;
# and when it refetches an object kept past its lifetime (beresp.keep) it sends the
# object's ETag in If-None-Match and, on a 304, keeps the stored body.

backend origin {
    .host = "@ORIGIN_HOST@";
    .port = "@ORIGIN_PORT@";
}

sub vcl_recv {
    if (req.method != "GET" && req.method != "HEAD") {
        return (pass);
    }
    # Devices send no cookies or credentials that would make the built-in VCL pass.
    return (hash);
}

sub vcl_hash {
    # The URL alone: not the Host header, as CloudFront's key does not hold it either.
    hash_data(req.url);
    return (lookup);
}

sub vcl_backend_fetch {
    set bereq.http.X-Origin-Verify = {"@SECRET@"};
}

sub vcl_backend_response {
    # Kept after its lifetime so that the next request revalidates it with its ETag
    # rather than fetching it again.
    set beresp.keep = 1h;
    # No stale answers while revalidating (Varnish takes the grace from
    # stale-while-revalidate): the request that finds the object expired waits for
    # the origin's 304, so a test sees the revalidation on that request.
    set beresp.grace = 0s;
    # On to the built-in VCL: no-store, private, Set-Cookie and `Vary: *` are not cached.
}

sub vcl_deliver {
    if (obj.hits > 0) {
        set resp.http.X-Cache = "HIT";
    } else {
        set resp.http.X-Cache = "MISS";
    }
}
