//! Images with a launcher (`empire.launcher=true`, the buildpack images): the docker
//! scheduler keeps their ENTRYPOINT and passes the process command as CMD.

mod common;

use common::*;

/// A busybox image whose ENTRYPOINT is a launcher that sets `GREETING` and runs its one
/// argument with the shell; labelled as a launcher image or not.
fn launcher_dockerfile(labelled: bool) -> String {
    let label = if labelled {
        "LABEL empire.launcher=true\n"
    } else {
        ""
    };
    format!(
        "FROM {BASE_IMAGE}\n\
         RUN mkdir -p /empire && printf '#!/bin/sh\\nexport GREETING=\"set by the launcher\"\\nexec /bin/sh -c \"$1\"\\n' > /empire/launch && chmod 755 /empire/launch\n\
         ENTRYPOINT [\"/empire/launch\"]\n{label}"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_launcher_image_keeps_its_entrypoint_and_gets_the_command() {
    let fixture = Fixture::new();
    let launcher_image = fixture.build_image(&launcher_dockerfile(true));
    let plain_image = fixture.build_image(&launcher_dockerfile(false));
    let gateway = Gateway::start(fixture.options()).await;

    let command = "mkdir -p /tmp/www && echo \"greeting: $GREETING\" > /tmp/www/index.html && exec httpd -f -p $PORT -h /tmp/www";
    for (image, expected) in [
        (&launcher_image, "greeting: set by the launcher\n"),
        // Without the label the command replaces the ENTRYPOINT, as before.
        (&plain_image, "greeting: \n"),
    ] {
        let app = fixture.app("launch");
        gateway
            .deploy(&spec(&app, image, 1, &[], vec![web("web", Some(command))]))
            .await;
        assert_eq!(
            gateway.get(&app).await.unwrap(),
            (200, expected.to_string()),
            "{image}"
        );
    }
}
