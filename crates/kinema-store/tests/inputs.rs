//! Input images on SQLite and PostgreSQL (each scenario on both): stored with the job
//! in its submission's transaction, shown without their bytes, loaded by the lease,
//! purged with the prompt.

use kinema_params::{DecodedImage, ImageSlot, InputImage};
use kinema_store::*;

const DAY: i64 = 86_400_000;
const T0: i64 = 1_700_000_000_000;
const OWNER: &str = "worker-a";
const LEASE: i64 = 60_000;

#[macro_use]
mod common;

struct Fixture {
    store: Store,
    account: String,
}

impl Fixture {
    async fn new(db: &common::TestDb) -> Fixture {
        let store = db.store.clone();
        let account = store.create_account("Acme", None, T0).await.unwrap().id;
        store
            .grant_credits(&account, 1_000, None, "", "admin", T0)
            .await
            .unwrap();
        Fixture { store, account }
    }
}

/// A stored (fitted) 64x64 picture of one colour.
fn picture(rgb: [u8; 3]) -> InputImage {
    let data: Vec<u8> = (0..64 * 64).flat_map(|_| rgb).collect();
    InputImage::encode(&DecodedImage {
        width: 64,
        height: 64,
        rgb: data,
    })
    .unwrap()
}

fn image_job(account: &str, first: InputImage, last: Option<InputImage>) -> NewJob {
    let mut job = common::new_job(account, 10);
    job.params.image = Some(first);
    job.params.last_image = last;
    job.params.guidance_scale_2 = Some(3.5);
    job
}

fn shown(image: &InputImage) -> InputImage {
    InputImage {
        png: None,
        ..image.clone()
    }
}

async fn images_are_stored_shown_without_bytes_and_leased_with_them(f: Fixture) {
    let (red, blue) = (picture([255, 0, 0]), picture([0, 0, 255]));
    assert_ne!(red.sha256, blue.sha256);
    let submitted = f
        .store
        .submit_job(
            image_job(&f.account, red.clone(), Some(blue.clone())),
            "t",
            T0,
        )
        .await
        .unwrap()
        .job()
        .clone();
    // A text job beside it has none.
    let text = f
        .store
        .submit_job(common::new_job(&f.account, 10), "t", T0 + 1)
        .await
        .unwrap()
        .job()
        .clone();
    assert!(!text.params.has_images());
    assert!(f.store.job_inputs(&text.id).await.unwrap().is_empty());

    // Read back: described (hash, size), no bytes; the second guidance scale kept.
    let read = f
        .store
        .get_job(Some(&f.account), &submitted.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(read.params.image, Some(shown(&red)));
    assert_eq!(read.params.last_image, Some(shown(&blue)));
    assert_eq!(read.params.guidance_scale_2, Some(3.5));
    let listed = f
        .store
        .list_member_jobs(&f.account, None, &[], i64::MAX, 10)
        .await
        .unwrap();
    let listed = listed.iter().find(|j| j.id == submitted.id).unwrap();
    assert_eq!(listed.params.image, Some(shown(&red)));

    // The bytes are in job_inputs, exactly as submitted.
    let stored = f.store.job_inputs(&submitted.id).await.unwrap();
    assert_eq!(
        stored,
        vec![
            (ImageSlot::Image, red.clone()),
            (ImageSlot::LastImage, blue.clone())
        ]
    );

    // The lease gives the worker the bytes.
    let leased = f
        .store
        .lease_next_job(OWNER, LEASE, T0 + 2)
        .await
        .unwrap()
        .job
        .unwrap();
    assert_eq!(leased.id, submitted.id);
    assert_eq!(leased.params.image, Some(red.clone()));
    assert_eq!(leased.params.last_image, Some(blue.clone()));
    assert_eq!(
        leased
            .params
            .image
            .as_ref()
            .unwrap()
            .pixels()
            .unwrap()
            .unwrap()
            .rgb[..3],
        [255, 0, 0]
    );
}

async fn images_are_purged_with_the_prompt(f: Fixture) {
    let job = f
        .store
        .submit_job(image_job(&f.account, picture([0, 255, 0]), None), "t", T0)
        .await
        .unwrap()
        .job()
        .clone();
    let kept = f
        .store
        .submit_job(image_job(&f.account, picture([9, 9, 9]), None), "t", T0)
        .await
        .unwrap()
        .job()
        .clone();
    let leased = f
        .store
        .lease_next_job(OWNER, LEASE, T0 + 1)
        .await
        .unwrap()
        .job
        .unwrap();
    assert_eq!(leased.id, job.id);
    let failure = Failure {
        code: "MODEL_ERROR".into(),
        message: "boom".into(),
        retryable: false,
    };
    let failed = f
        .store
        .fail_job(&job.id, OWNER, &failure, &Usage::default(), T0 + 2)
        .await
        .unwrap();
    let expires = failed
        .prompt_expires_at
        .expect("a finished job's prompt expires");
    // Not yet due: nothing purged.
    assert_eq!(
        f.store
            .purge_expired_prompts(expires - 1, 100)
            .await
            .unwrap(),
        0
    );
    assert_eq!(f.store.job_inputs(&job.id).await.unwrap().len(), 1);

    assert_eq!(
        f.store.purge_expired_prompts(expires, 100).await.unwrap(),
        1
    );
    let purged = f
        .store
        .get_job(Some(&f.account), &job.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(purged.prompt_purged_at, Some(expires));
    assert_eq!(purged.params.prompt, "");
    assert_eq!(purged.params.image, None, "the image goes with the prompt");
    assert!(f.store.job_inputs(&job.id).await.unwrap().is_empty());
    // The job and its money stay.
    assert_eq!((purged.state, purged.refunded), (JobState::Failed, 10));

    // The queued job's image is untouched, even long after.
    f.store
        .purge_expired_prompts(expires + 365 * DAY, 100)
        .await
        .unwrap();
    assert_eq!(f.store.job_inputs(&kept.id).await.unwrap().len(), 1);
    let still = f
        .store
        .get_job(Some(&f.account), &kept.id)
        .await
        .unwrap()
        .unwrap();
    assert!(still.params.image.is_some());
}

on_both_backends!(
    images_are_stored_shown_without_bytes_and_leased_with_them,
    images_are_purged_with_the_prompt,
);
